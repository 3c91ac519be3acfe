"""A full disk is a clean OSError from the call that needed the space, never a dead process.

With and without preallocation, on a small tmpfs and a small loop-mounted ext4 (when this runs
as root and can mount them; otherwise the tests say why they skip) and under RLIMIT_FSIZE:
every page handed out is written to its last byte, protected pages are allocated and written,
until the disk is full. The error must be ENOSPC or EFBIG, the pager must go on working for
what needs no new space, and the file must reopen to its last commit and check clean. Each
workload runs in a child process, since a SIGBUS would kill it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import mappedpages as mp
from helpers import check_ok

CHILD = """
    import errno, json, resource, signal, sys
    import mappedpages as mp
    path, prealloc = sys.argv[1], sys.argv[2] == "1"
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the default action would kill us
    limit = 300 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    out = {}
    with mp.Pager.create(path, 1024, preallocate=prealloc) as p:
        ids = []
        try:
            while True:
                ids.append(p.alloc())
        except OSError as exc:
            out["errno"] = exc.errno
        out["committed"] = [int(x) for x in p.iter_allocated_pages()]
        with p.batch():  # a failed bulk call inside a batch: the batch is still usable
            try:
                p.alloc_bulk(10_000)
            except OSError:
                out["bulk_failed"] = True
        p.free(ids[0])  # the pager still works after the failed growth
        again = p.alloc()
        out["freed"], out["reused"] = int(ids[0]), int(again)
        out["final"] = [int(x) for x in p.iter_allocated_pages()]
    print(json.dumps(out))
"""


def _child(core: str, script: str, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, MAPPEDPAGES_CORE=core),
    )
    # a negative return code is the signal that killed it: SIGBUS (-7), SIGXFSZ (-25)
    assert out.returncode == 0, f"return code {out.returncode}: {out.stderr}"
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("prealloc", [True, False], ids=["fallocate", "sparse"])
def test_growth_past_the_limit_is_a_clean_error(core: str, path: str, prealloc: bool) -> None:
    result = _child(core, CHILD, path, "1" if prealloc else "0")
    assert result["errno"] in (errno.EFBIG, errno.ENOSPC)
    assert result["bulk_failed"]
    assert result["reused"] == result["freed"]
    assert len(result["committed"]) > 100  # type: ignore[arg-type]
    check_ok(path)
    with mp.Pager.open(path) as p:
        assert [int(x) for x in p.iter_allocated_pages()] == result["final"]
        assert os.path.getsize(path) <= 300 * 1024


# -- full file systems ------------------------------------------------------------------------

FS_BYTES = 4 << 20  # a few seconds per case at most, on either file system
PAGE = 4096

# Fills the disk: regular pages (alloc and alloc_bulk, every byte of each written through its
# view) or protected pages (alloc_protected, alloc_protected_bulk and writes, old pages
# rewritten too), until a call fails. Prints what the pager holds then, which the failed call
# must have left as it was, and what the calls after the failure did.
WORKLOAD = """
    import json, resource, signal, sys
    import mappedpages as mp
    path, prealloc, workload = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
    limit, sync, ps = int(sys.argv[4]), sys.argv[5] == "1", int(sys.argv[6])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    def fill(view, tag):
        view[:] = tag.to_bytes(8, "little") * (ps // 8)

    def state(p):
        regular = {}
        for x in p.iter_allocated_pages():
            regular[int(x)] = int.from_bytes(p.get_page(x)[:8], "little")
        protected = {}
        for x in p.iter_allocated_protected_pages():
            protected[int(x)] = int.from_bytes(p.get_protected_page(x)[:8], "little")
        return {"regular": regular, "protected": protected}

    out = {"calls": 0}
    with mp.Pager.create(path, ps, sync=sync, preallocate=prealloc) as p:
        expected = {"regular": {}, "protected": {}}
        n = 0
        try:
            while True:
                n += 1
                out["calls"] = n
                if workload == "regular":
                    ids = [p.alloc()] if n % 3 == 0 else p.alloc_bulk(n % 40 + 1)
                    for pid in ids:
                        fill(p.get_page_mut(pid), int(pid))
                        expected["regular"][int(pid)] = int(pid)
                else:
                    new = [p.alloc_protected()] if n % 4 else p.alloc_protected_bulk(3)
                    for x in new:
                        expected["protected"][int(x)] = 0
                    for x in new + ([mp.ProtectedPageId(n // 2, ps)] if n > 2 else []):
                        with x.get_mut(p) as w:
                            fill(w.page_mut(), n)
                        expected["protected"][int(x)] = n
        except OSError as exc:
            out["errno"] = exc.errno
            out["error"] = str(exc)
        out["held"] = state(p)
        out["expected"] = expected
        out["generation"] = p.generation
        # not poisoned: a call that needs no new space works, one that does fails alike
        for x in list(expected["regular"])[:3]:
            fill(p.get_page_mut(mp.PageId(x, ps)), x)
        p.flush()
        try:
            p.alloc_bulk(64)
            out["again"] = "allocated"
        except OSError as exc:
            out["again"] = exc.errno
        out["after"] = state(p)
    print(json.dumps(out))
"""


def _skip_unless_root(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"mounting a small file system needs {', '.join(missing)}")


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def _mounted(tmp_path: Path, kind: str) -> Iterator[str]:
    """A fresh file system of FS_BYTES mounted under tmp_path, unmounted afterwards."""
    where = tmp_path / "mnt"
    where.mkdir()
    if kind == "tmpfs":
        _skip_unless_root("mount", "umount")
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(where)]
    else:
        _skip_unless_root("mount", "umount", "mkfs.ext4")
        image = tmp_path / "ext4.img"
        with open(image, "wb") as f:
            f.truncate(2 * FS_BYTES)  # the journal and the inode tables take their share
        made = _run(["mkfs.ext4", "-q", "-F", str(image)])
        if made.returncode:
            pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
        cmd = ["mount", "-o", "loop", str(image), str(where)]
    mounted = _run(cmd)
    if mounted.returncode:
        pytest.skip(f"cannot mount a {kind} ({' '.join(cmd)}): {mounted.stderr.strip()}")
    try:
        yield str(where)
    finally:
        if _run(["umount", str(where)]).returncode:
            _run(["umount", "-l", str(where)])


@pytest.fixture(params=["tmpfs", "ext4", "rlimit"])
def full_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """A directory whose disk fills after a few MiB (or under a file-size limit): the
    directory, the limit (0: none) and the bytes there are room for."""
    if request.param == "rlimit":
        yield str(tmp_path), FS_BYTES // 4, FS_BYTES // 4
        return
    with _mounted(tmp_path, request.param) as where:
        yield where, 0, FS_BYTES


def _ints(d: object) -> dict[int, int]:
    assert isinstance(d, dict)
    return {int(k): int(v) for k, v in d.items()}


def _reopened(path: str) -> dict[str, dict[int, int]]:
    with mp.Pager.open(path) as p:
        regular = {
            int(x): int.from_bytes(p.get_page(x)[:8], "little") for x in p.iter_allocated_pages()
        }
        protected = {
            int(x): int.from_bytes(p.get_protected_page(x)[:8], "little")
            for x in p.iter_allocated_protected_pages()
        }
    return {"regular": regular, "protected": protected}


@pytest.mark.parametrize("workload", ["regular", "protected"])
@pytest.mark.parametrize("prealloc", [True, False], ids=["fallocate", "sparse"])
def test_a_full_disk_is_an_error_from_the_call_that_needed_space(
    core: str, full_dir: tuple[str, int, int], prealloc: bool, workload: str
) -> None:
    where, limit, room = full_dir
    path = os.path.join(where, "pages.mp")
    sync = workload == "regular"  # durable commits, and protected ones without the syncs
    result = _child(
        core, WORKLOAD, path, "1" if prealloc else "0", workload, str(limit), "1" if sync else "0",
        str(PAGE),
    )  # fmt: skip
    assert result["errno"] in (errno.ENOSPC, errno.EFBIG), result
    held = {k: _ints(v) for k, v in result["held"].items()}  # type: ignore[attr-defined]
    expected = {k: _ints(v) for k, v in result["expected"].items()}  # type: ignore[attr-defined]
    assert held == expected  # the failed call left nothing of itself, written bytes intact
    kind = "regular" if workload == "regular" else "protected"
    assert len(held[kind]) * PAGE > room // 4, "the disk filled far too early"
    assert result["again"] in ("allocated", errno.ENOSPC, errno.EFBIG)
    after = {k: _ints(v) for k, v in result["after"].items()}  # type: ignore[attr-defined]
    check_ok(path)
    assert _reopened(path) == after
    if result["again"] != "allocated":
        assert after == held


# Fills the disk to its last page, then asks for commits whose checkpoint needs a page: each
# must fail with the pager's state as it was, a batch's as it was before the batch, and the
# pager must still be usable.
CHECKPOINT = """
    import json, sys
    import mappedpages as mp
    path = sys.argv[1]
    out = {}
    with mp.Pager.create(path, 1024, sync=False, preallocate=False) as p:
        ids = []
        for size in (16, 1):  # in bulk, then page by page up to the last page with space
            try:
                while True:
                    ids += p.alloc_bulk(size) if size > 1 else [p.alloc()]
            except OSError as exc:
                out.setdefault("errnos", []).append(exc.errno)
        before = [int(x) for x in p.iter_allocated_pages()]
        gen = p.generation
        try:
            p._core.checkpoint_now()
        except OSError as exc:
            out["checkpoint"] = exc.errno
        out["unchanged"] = [int(x) for x in p.iter_allocated_pages()] == before
        out["same_generation"] = p.generation == gen
        try:
            with p.batch():
                p.free_bulk(ids[::2])
                p._core.checkpoint_now()
        except OSError as exc:
            out["batch"] = exc.errno
        out["batch_undone"] = [int(x) for x in p.iter_allocated_pages()] == before
        out["generation_after_batch"] = p.generation - gen
        try:
            p.free(ids[-1])
            out["freed"] = int(ids[-1])
        except OSError as exc:
            out["free"] = exc.errno
        out["final"] = [int(x) for x in p.iter_allocated_pages()]
    print(json.dumps(out))
"""


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_a_checkpoint_without_space_takes_its_commit_back(
    core: str, tmp_path: Path, kind: str
) -> None:
    with _mounted(tmp_path, kind) as where:
        path = os.path.join(where, "pages.mp")
        result = _child(core, CHECKPOINT, path)
        assert result["errnos"] == [errno.ENOSPC, errno.ENOSPC]
        assert result["checkpoint"] == errno.ENOSPC
        assert result["unchanged"] and result["same_generation"]
        assert result["batch"] == errno.ENOSPC
        assert result["batch_undone"] and result["generation_after_batch"] == 0
        check_ok(path)
        with mp.Pager.open(path) as p:
            assert [int(x) for x in p.iter_allocated_pages()] == result["final"]


HUGE = """
    import errno, json, os, shutil, sys
    import mappedpages as mp
    path, prealloc = sys.argv[1], sys.argv[2] == "1"
    out = {}
    with mp.Pager.create(path, 1024, preallocate=prealloc) as p:
        before = shutil.disk_usage(os.path.dirname(path)).free
        try:
            p.alloc_bulk(1 << 20)  # 1 GiB of pages on a file system of a few MiB
        except OSError as exc:
            out["errno"] = exc.errno
        out["file_bytes"] = os.stat(path).st_blocks * 512
        out["free_before"], out["free_after"] = before, shutil.disk_usage(path).free
        out["still_works"] = int(p.alloc())
    print(json.dumps(out))
"""


@pytest.mark.parametrize("prealloc", [True, False], ids=["fallocate", "sparse"])
@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_a_request_far_beyond_the_free_space_takes_none_of_it(
    core: str, tmp_path: Path, kind: str, prealloc: bool
) -> None:
    # posix_fallocate would take every free block before failing, and ext4 keeps them
    with _mounted(tmp_path, kind) as where:
        path = os.path.join(where, "pages.mp")
        result = _child(core, HUGE, path, "1" if prealloc else "0")
        assert result["errno"] == errno.ENOSPC
        assert result["free_after"] >= result["free_before"] - 512 * 1024, result
        check_ok(path)
