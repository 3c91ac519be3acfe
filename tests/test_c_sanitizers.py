"""The C core compiles warning-free and runs clean under AddressSanitizer and UBSan.

tests/c/core_driver.c calls every function of csrc/mappedpages.h, including with bad indices,
and then opens thousands of mutated files; built with the sanitizers, any out-of-bounds access,
use after free, leak-free misuse or undefined behaviour aborts it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

import mappedpages as mp
from helpers import count
from mappedpages import _backend

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
SOURCES = sorted(str(p) for p in CSRC.glob("*.c"))
CC = os.environ.get("CC", "cc")
FLAGS = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wpedantic", "-Werror", f"-I{CSRC}"]
MUTATIONS = 5000


def _compile(args: list[str]) -> None:
    out = subprocess.run([CC, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr  # not even a note


@pytest.mark.parametrize("source", SOURCES, ids=os.path.basename)
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_compiles_without_warnings(source: str, opt: str, tmp_path: Path) -> None:
    _compile([*FLAGS, opt, "-c", source, "-o", str(tmp_path / "out.o")])


def test_python_module_compiles_without_warnings(tmp_path: Path) -> None:
    """csrc/python/crc32c_module.c (the CPython entry for mp.crc32c), against this Python, at
    each stable-ABI level setup.py may choose that this Python's headers have."""
    include = sysconfig.get_paths()["include"]
    source = CSRC / "python" / "crc32c_module.c"
    levels = ["0x030A0000"] + (["0x030B0000"] if sys.version_info >= (3, 11) else [])
    for level, opt in itertools.product(levels, ("-O0", "-O2")):
        limited = f"-DPy_LIMITED_API={level}"
        _compile(
            [*FLAGS, opt, limited, f"-I{include}", "-c", str(source), "-o", str(tmp_path / "m.o")]
        )


def _logged_file(path: Path) -> None:
    """4 KiB pages, two protected writes in the commit record's log."""
    with mp.Pager.create(path, 4096, sync=False) as p:
        ids = p.alloc_protected_bulk(4)
        for ppid in ids[1:3]:
            with ppid.get_mut(p) as w:
                w.page_mut()[:2] = b"ok"


def test_core_under_address_and_undefined_sanitizers(tmp_path: Path) -> None:
    driver = tmp_path / "core_driver"
    _compile(
        [
            *FLAGS,
            "-g",
            "-O1",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer",
            *SOURCES,
            str(ROOT / "tests" / "c" / "core_driver.c"),
            "-o",
            str(driver),
            "-lpthread",
        ]
    )
    # tmpfs keeps thousands of file writes cheap where the machine has it
    scratch_dir = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        fresh, base = scratch_dir / "fresh.mp", scratch_dir / "base.mp"
        logged = scratch_dir / "logged.mp"
        with _backend.using("python"):  # files from the other core: the driver tests C alone
            mp.Pager.create(fresh, 1024).close()
            _logged_file(logged)
            with mp.Pager.create(base, 1024, sync=False) as p:
                ids = p.alloc_bulk(7400)  # past bitmap group 1, which begins at page 7168
                p.free_bulk(ids[::3])
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1")
        out = subprocess.run(
            [
                str(driver),
                str(fresh),
                str(base),
                str(scratch_dir / "scratch.mp"),
                str(MUTATIONS),
                str(logged),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    finally:
        shutil.rmtree(scratch_dir)
    assert out.returncode == 0, out.stderr[-4000:]
    runs = [line for line in out.stdout.splitlines() if line.startswith("hostile files: ")]
    assert [line.split()[2] for line in runs] == [f"{MUTATIONS // 5},", f"{MUTATIONS},"]
    count("hostile files (C core under ASan+UBSan)", MUTATIONS + MUTATIONS // 5)
    for line, total in zip(runs, (MUTATIONS // 5, MUTATIONS), strict=True):
        opened = int(line.rsplit(":", 1)[1])
        assert 0 < opened < total  # both outcomes were exercised
