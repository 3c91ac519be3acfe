"""The single-writer lock, fork safety and core selection: things that involve processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import mappedpages as mp


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_second_writer_in_same_process(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        with pytest.raises(mp.FileLocked):
            mp.Pager.open(path)
        with pytest.raises(BlockingIOError):
            mp.Pager.open(path)
        p.alloc()
    with mp.Pager.open(path) as p:  # released on close
        assert p.page_count >= 4


def test_second_writer_in_other_process(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024):
        out = _run(
            f"""
            import mappedpages as mp
            try:
                mp.Pager.open({path!r})
            except mp.FileLocked:
                print("locked")
            """,
            MAPPEDPAGES_CORE=core,
        )
        assert out.stdout.strip() == "locked", out.stderr
    out = _run(
        f"""
        import mappedpages as mp
        with mp.Pager.open({path!r}) as p:
            print(p.alloc().index)
        """,
        MAPPEDPAGES_CORE=core,
    )
    assert out.returncode == 0 and int(out.stdout) >= 3, out.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_gets_unavailable(core: str, path: str) -> None:
    p = mp.Pager.create(path, 1024)
    keep = p.alloc()
    view = p.get_page_mut(keep)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: every use raises Unavailable, views stay safe, nothing is written
        code = 0
        for call in (p.alloc, lambda: p.free(keep), lambda: p.get_page(keep), p.flush):
            try:
                call()
                code = 1
            except mp.Unavailable:
                pass
            except BaseException:
                code = 2
        view[0:1]  # reading an inherited view must not crash
        os.write(write_fd, bytes([code]))
        os._exit(0)
    os.close(write_fd)
    result = os.read(read_fd, 1)
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert result == b"\x00"
    second = p.alloc()  # the parent keeps working
    p.close()
    with mp.Pager.open(path) as again:
        assert list(again.iter_allocated_pages()) == [keep, second]


@pytest.mark.parametrize("name", ["c", "python"])
def test_core_selection_by_environment(name: str) -> None:
    out = _run("import mappedpages as mp; print(mp.core)", MAPPEDPAGES_CORE=name)
    assert out.stdout.strip() == name, out.stderr


def test_bad_core_name_is_an_error() -> None:
    out = _run("import mappedpages", MAPPEDPAGES_CORE="fortran")
    assert out.returncode != 0 and "MAPPEDPAGES_CORE" in out.stderr


def test_default_core_is_c() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MAPPEDPAGES_CORE"}
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import mappedpages as mp; print(mp.core)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.stdout.strip() == "c", out.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_cannot_use_inherited_readers_or_protected_pages(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        ppid = p.alloc_protected()
        pid = p.alloc()
    writer = mp.Pager.open(path)
    ro = mp.ReadOnlyPager.open(path)
    view = ro.get_page(pid)
    child = os.fork()
    if child == 0:
        code = 0
        calls = (
            writer.alloc_protected,
            lambda: writer.free_protected(ppid),
            lambda: ppid.get_mut(writer),
            lambda: ro.get_page(pid),
            lambda: ro.get_protected_page(ppid),
            ro.iter_allocated_pages,
        )
        for call in calls:
            try:
                call()
                code |= 1
            except mp.Unavailable:
                pass
            except BaseException:
                code |= 2
        bytes(view[:1])  # an inherited view stays readable
        os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    with ppid.get_mut(writer) as w:  # the parent goes on
        w.page_mut()[:2] = b"ok"
    assert list(ro.iter_allocated_pages()) == [pid]
    writer.close()
    ro.close()
    with mp.Pager.open(path) as again:
        assert bytes(again.get_protected_page(ppid)[:2]) == b"ok"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_that_lives_on_does_not_keep_the_file_locked(core: str, path: str) -> None:
    p = mp.Pager.create(path, 1024)
    small = mp.SubPageAllocator(p, 256)
    kept = p.alloc()
    busy = threading.Event()
    release = threading.Event()

    def hold_a_batch() -> None:  # another thread is inside a batch at the fork
        with p.batch():
            p.alloc()
            busy.set()
            release.wait(30)

    holder = threading.Thread(target=hold_a_batch)
    holder.start()
    busy.wait(30)
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # lives on; its inherited pager raises instead of waiting for the batch
        code = 0
        for call in (p.alloc, lambda: p.free(kept), small.alloc, p.close):
            try:
                call()
            except mp.Unavailable:
                pass
            except BaseException:
                code = 1
        os.write(write_fd, bytes([code]))
        time.sleep(60)
        os._exit(0)
    try:
        os.close(write_fd)
        assert os.read(read_fd, 1) == b"\x00"
        os.close(read_fd)
        release.set()
        holder.join(30)
        p.close()
        with mp.Pager.open(path) as again:  # at once: the child holds nothing of the file
            assert kept in set(again.iter_allocated_pages())
            again.alloc()
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
