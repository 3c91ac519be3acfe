"""The command line: info and check."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import mappedpages as mp
from mappedpages.cli import main


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mappedpages", *args], capture_output=True, text=True, timeout=120
    )


def test_info_and_check(core: str, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    with mp.Pager.create(path, 2048) as p:
        p.alloc_bulk(10)
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "page size" in out and "2048" in out and "generation" in out
    assert main(["info", "--json", path]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["page_size"] == 2048
    assert info["allocated_data_pages"] == 10
    assert info["active_metadata"] in ("A", "B")
    assert main(["check", path]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_reports_damage(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(10)
    with open(path, "r+b") as f:  # damage both metadata copies
        for page in (1, 2):
            f.seek(page * 1024 + 200)
            f.write(b"\x99")
    out = _cli("check", path)
    assert out.returncode == 1
    assert "metadata" in out.stdout and "Traceback" not in out.stdout + out.stderr


def test_missing_and_foreign_files(tmp_path: object) -> None:
    missing = os.path.join(str(tmp_path), "nope.mp")
    out = _cli("check", missing)
    assert out.returncode == 2
    assert "No such file" in out.stderr.strip().splitlines()[-1]
    assert "Traceback" not in out.stderr
    foreign = os.path.join(str(tmp_path), "foreign.txt")
    with open(foreign, "w") as f:
        f.write("not a page file\n" * 200)
    out = _cli("check", foreign)
    assert out.returncode == 1 and "not a mappedpages file" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    out = _cli("info", foreign)
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr


def test_no_command_is_a_usage_error() -> None:
    out = _cli()
    assert out.returncode == 2 and "usage" in out.stderr
