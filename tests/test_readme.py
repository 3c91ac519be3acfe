"""Every Python block of README.md runs, in order, on both cores, and passes mypy --strict on
its own: the examples cannot rot, and each one can be copied as it is."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from helpers import mypy_strict

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 4


def test_readme_examples_run(core: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the examples create their files in the current directory
    namespace: dict[str, object] = {"__name__": "readme"}
    for number, block in enumerate(BLOCKS, 1):
        code = compile(block, f"README.md block {number}", "exec")
        exec(code, namespace)
    files = sorted(os.listdir(tmp_path))
    assert [f for f in files if not f.endswith("-readers")] == ["data.mp", "records.mp"]
    assert all(f.removesuffix("-readers") in files for f in files)  # beside each, its reader table


@pytest.mark.slow  # runs mypy, as tests/test_static.py does
def test_readme_examples_type_check(tmp_path: Path) -> None:
    files = []
    for number, block in enumerate(BLOCKS, 1):
        files.append(tmp_path / f"readme_block_{number}.py")
        files[-1].write_text(block, encoding="utf-8")
    found = mypy_strict(files)
    errors = {f"README.md block {n}": found[f.resolve()] for n, f in enumerate(files, 1)}
    assert all(not e for e in errors.values()), errors
