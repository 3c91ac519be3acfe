"""The C core compiles warning-free and runs clean under AddressSanitizer and UBSan.

tests/c/core_driver.c calls every function of csrc/mappedpages.h, with every kind of bad
argument, checks that snapshots keep their pages while the writer reuses others, upgrades a
format-1 state, and then opens thousands of mutated files as a writer and as snapshots; built
with the sanitizers, any out-of-bounds access, use after free, leak or undefined behaviour
aborts it.
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

# slow: builds its own C core, run in full by the first run of .ci/run (the installed wheel's run
# leaves the slow tests out)
pytestmark = pytest.mark.slow

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


PYTHON_MODULES = sorted(str(p) for p in (CSRC / "python").glob("*.c"))


@pytest.mark.parametrize("source", PYTHON_MODULES, ids=os.path.basename)
def test_python_module_compiles_without_warnings(source: str, tmp_path: Path) -> None:
    """csrc/python/*.c (mp.crc32c, and handles and views), against this Python, at each
    stable-ABI level setup.py may choose that this Python's headers have."""
    include = sysconfig.get_paths()["include"]
    levels = ["0x030A0000"] + (["0x030B0000"] if sys.version_info >= (3, 11) else [])
    for level, opt in itertools.product(levels, ("-O0", "-O2")):
        limited = f"-DPy_LIMITED_API={level}"
        _compile([*FLAGS, opt, limited, f"-I{include}", "-c", source, "-o", str(tmp_path / "m.o")])


_LOAD_INSTRUMENTED = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("mappedpages._views", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["mappedpages._views"] = module
spec.loader.exec_module(module)
import mappedpages, pytest
assert mappedpages.handles._views is module and mappedpages.Pager.get_page is module.Views.get_page
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[2:]]))
"""


def test_views_module_under_address_and_undefined_sanitizers(tmp_path: Path) -> None:
    """csrc/python/views_module.c built with ASan and UBSan and loaded in place of the
    installed one (the interpreter with the sanitizers' runtimes preloaded), under the tests
    of handles, views and sub-pages on both cores: any bad access or reference aborts."""
    include = sysconfig.get_paths()["include"]
    module = tmp_path / "_views.abi3.so"
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    _compile(
        [*FLAGS, "-g", "-O1", *sanitize, "-fno-omit-frame-pointer", "-fPIC", "-shared",
         f"-I{include}", "-DPy_LIMITED_API=0x030A0000", str(CSRC / "python" / "views_module.c"),
         "-o", str(module)]
    )  # fmt: skip
    runtimes = []
    for name in ("libasan.so", "libubsan.so"):
        found = subprocess.run([CC, f"-print-file-name={name}"], capture_output=True, text=True)
        assert os.path.isabs(found.stdout.strip()), f"{CC} has no {name}"
        runtimes.append(found.stdout.strip())
    env = dict(
        os.environ,
        LD_PRELOAD=":".join(runtimes),
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",  # the interpreter itself keeps memory
    )
    tests = [
        str(ROOT / "tests" / name)
        for name in ("test_views.py", "test_handles.py", "test_subpages.py")
    ]
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_INSTRUMENTED, str(module), *tests],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT / "tests",
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert " passed" in out.stdout and "failed" not in out.stdout, out.stdout[-2000:]


def make_bases(fresh: Path, busy: Path, logged: Path) -> None:
    """The driver's files, written by the pure core so that the driver tests C alone (also run
    by tests/c/fuzz.sh)."""
    with _backend.using("python"):
        mp.Pager.create(fresh, 1024).close()
        with mp.Pager.create(busy, 1024, sync=False) as p:
            ids = p.alloc_bulk(7000)  # three bitmap leaves of 2624 pages
            prot = p.alloc_protected_bulk(70)  # two directory leaves
            with p.snapshot():  # what is freed meanwhile is still pending at the checkpoint
                p.free_bulk(ids[::3])
                p.free_protected_bulk(prot[20:23])
                p._core.checkpoint_now()
            for ppid in prot[5:8]:
                with ppid.get_mut(p) as w:
                    w.page_mut()[:4] = b"busy"
            p.free_bulk(ids[1:30:3])  # the newest record's log: protected writes and frees
        with mp.Pager.create(logged, 4096, sync=False) as p:
            for ppid in p.alloc_protected_bulk(4)[1:3]:
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
        fresh, busy = scratch_dir / "fresh.mp", scratch_dir / "busy.mp"
        logged = scratch_dir / "logged.mp"
        make_bases(fresh, busy, logged)
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1")
        out = subprocess.run(
            [
                str(driver),
                str(fresh),
                str(busy),
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
    totals = [MUTATIONS // 5, MUTATIONS // 5, MUTATIONS]  # the logged, fresh and busy files
    assert [line.split()[2] for line in runs] == [f"{n}," for n in totals]
    count("hostile files (C core under ASan+UBSan)", sum(totals))
    for line, total in zip(runs, totals, strict=True):
        opened = int(line.rsplit(":", 1)[1])
        assert 0 < opened < total  # both outcomes were exercised
