"""Snapshots: a reader sees one commit, whole, for as long as it lives, and the writer never
waits for it (API.md, "Snapshots"). Both cores; readers in this process and in others."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import mappedpages as mp
from helpers import check_ok, pager_state


def _write(p: mp.Pager, ppid: mp.ProtectedPageId, text: bytes) -> None:
    with ppid.get_mut(p) as w:
        w.page_mut()[: len(text)] = text


def test_a_snapshot_keeps_its_commit_while_the_writer_goes_on(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        a = p.alloc_protected()
        _write(p, a, b"v1")
        ids = p.alloc_bulk(5)
        gen = p.generation
        with p.snapshot() as snap:
            view = snap.get_protected_page(a)
            assert snap.generation == gen
            for i in range(50):  # far more commits than two alternating copies survive
                _write(p, a, b"w%d" % i)
            p.free_bulk(ids)
            new = p.alloc_bulk(20)
            assert not set(new) & set(ids)  # what the snapshot has is not handed out again
            assert bytes(view[:2]) == b"v1" and bytes(snap.get_protected_page(a)[:2]) == b"v1"
            assert list(snap.iter_allocated_pages()) == ids
            assert snap.page_count <= p.page_count and snap.generation == gen
            with pytest.raises(mp.ReservedPage):
                snap.get_page(mp.PageId(0, 1024))
        assert bytes(p.get_protected_page(a)[:3]) == b"w49"
        p.free_bulk(new)
        again = p.alloc_bulk(5)  # the snapshot is gone: its pages may be reused now
        assert set(again) & set(ids)
    check_ok(path)


def test_a_snapshot_has_the_read_api_and_no_mutating_one(core: str, path: str) -> None:
    with mp.Pager.create(path, 4096) as p:
        pid = p.alloc()
        p.get_page_mut(pid)[:3] = b"abc"
        ppid = p.alloc_protected()
        snap = p.snapshot()
        assert isinstance(snap, mp.Snapshot)
        assert (snap.page_size, snap.path) == (4096, path)
        assert snap.free_page_count == p.free_page_count
        assert bytes(pid.get(snap)[:3]) == b"abc" and bytes(ppid.get(snap)) == bytes(4096)
        assert list(snap.iter_allocated_protected_pages()) == [ppid]
        for name in ("alloc", "free", "batch", "alloc_protected", "get_page_mut", "refresh"):
            assert not hasattr(snap, name)
        with pytest.raises(TypeError):
            snap.get_page(pid)[0] = 1  # read-only views
        snap.close()
        snap.close()  # idempotent
        with pytest.raises(mp.Unavailable):
            snap.get_page(pid)


def test_a_snapshot_is_read_from_other_threads_without_a_lock(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        pages = p.alloc_protected_bulk(8)
        for i, ppid in enumerate(pages):
            _write(p, ppid, b"%04d" % i)
        expected = [bytes(p.get_protected_page(x)) for x in pages]
        errors: list[BaseException] = []
        stop = threading.Event()
        with p.snapshot() as snap:

            def read() -> None:
                try:
                    while not stop.is_set():
                        got = [bytes(snap.get_protected_page(x)) for x in pages]
                        assert got == expected
                        assert list(snap.iter_allocated_protected_pages()) == pages
                except BaseException as exc:  # the thread's failure is the test's
                    errors.append(exc)

            threads = [threading.Thread(target=read) for _ in range(3)]
            for t in threads:
                t.start()
            for i in range(2000):  # the writer never waits for the readers
                _write(p, pages[i % 8], b"x%03d" % (i % 1000))
                p.free(p.alloc())
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors[0]


def test_snapshots_pin_one_generation_each(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        a = p.alloc_protected()
        snaps = []
        for i in range(5):
            _write(p, a, b"g%d" % i)
            snaps.append(p.snapshot())
        for i, snap in enumerate(snaps):
            assert bytes(snap.get_protected_page(a)[:2]) == b"g%d" % i
        for i in range(100):
            _write(p, a, b"h%d" % i)
        for i, snap in enumerate(snaps):
            assert bytes(snap.get_protected_page(a)[:2]) == b"g%d" % i
            snap.close()


def test_a_reader_in_this_process_is_registered_and_refreshes(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        a = p.alloc_protected()
        _write(p, a, b"one")
        with mp.ReadOnlyPager.open(path) as ro:
            assert ro.registered and ro.generation == p.generation
            assert [(r.pid, r.generation) for r in mp.readers(path)] == [
                (os.getpid(), ro.generation)
            ]
            assert ro.refresh() is False  # nothing new
            for i in range(30):
                _write(p, a, b"%03d" % i)
            assert bytes(ro.get_protected_page(a)[:3]) == b"one"  # still its commit
            assert ro.refresh() is True
            assert ro.generation == p.generation and bytes(ro.get_protected_page(a)[:3]) == b"029"
            assert mp.readers(path)[0].generation == p.generation
        assert mp.readers(path) == []


def test_reclamation_waits_for_the_oldest_reader_only(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        ids = p.alloc_bulk(10)
        old = mp.ReadOnlyPager.open(path)
        p.free_bulk(ids)
        new = p.alloc_bulk(10)
        assert not set(new) & set(ids)  # the reader of the older commit still has them
        old.close()
        p.free_bulk(new)
        assert set(p.alloc_bulk(20)) >= set(ids)  # nobody reads them any more


def test_readers_are_listed_with_pid_generation_and_age(core: str, path: str) -> None:
    code = """
        import sys, time
        import mappedpages as mp
        ro = mp.ReadOnlyPager.open(sys.argv[1])
        print(ro.generation, flush=True)
        time.sleep(60)
    """
    with mp.Pager.create(path, 1024) as p:
        p.alloc()
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), path],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, MAPPEDPAGES_CORE=core),
        )
        try:
            assert child.stdout is not None
            gen = int(child.stdout.readline())
            (info,) = mp.readers(path)
            assert (info.pid, info.generation) == (child.pid, gen)
            assert 0 <= time.time() - info.since < 30
            out = subprocess.run(
                [sys.executable, "-m", "mappedpages", "readers", path],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0 and str(child.pid) in out.stdout and str(gen) in out.stdout
            child.send_signal(signal.SIGKILL)  # a dead reader is not listed, nor kept
            child.wait()
            assert mp.readers(path) == []
            ids = p.alloc_bulk(3)
            p.free_bulk(ids)
            assert p.alloc_bulk(3) == ids  # reclaimed at once: its slot's lock went with it
        finally:
            child.kill()
            child.wait()


@pytest.fixture
def read_only_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A directory and a read-only bind mount of it (the reader's view of the same files)."""
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    mount = subprocess.run(["mount", "--bind", str(rw), str(ro)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot bind-mount a directory read-only here: {mount.stderr!r}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        yield rw, ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_a_reader_without_write_access_to_the_table_opens_unregistered(
    core: str, read_only_view: tuple[Path, Path]
) -> None:
    rw, ro = read_only_view
    with mp.Pager.create(rw / "pages.mp", 1024) as p:
        ids = p.alloc_bulk(3)
        with mp.ReadOnlyPager.open(ro / "pages.mp") as reader:  # cannot write the table there
            assert not reader.registered
            assert list(reader.iter_allocated_pages()) == ids
            assert mp.readers(rw / "pages.mp") == []  # the writer cannot see it
            p.alloc()
            assert reader.refresh() and len(list(reader.iter_allocated_pages())) == 4


def test_a_full_reader_table_is_a_clear_error(core: str, path: str) -> None:
    from mappedpages import _readertable
    from mappedpages import format as fmt

    mp.Pager.create(path, 1024).close()
    with mp.ReadOnlyPager.open(path) as ro:
        table = ro._table
        assert table is not None
        held = []  # every other slot taken by other open file descriptions
        for i in range(fmt.TABLE_CAPACITY):
            fd = os.open(table.path, os.O_RDWR)
            if _readertable._try_lock(fd, fmt.table_slot_offset(i)):
                held.append(fd)
            else:
                os.close(fd)
        try:
            with pytest.raises(mp.Unavailable, match="full"):
                mp.ReadOnlyPager.open(path)
        finally:
            for fd in held:
                os.close(fd)
        with mp.ReadOnlyPager.open(path) as again:  # and slots come back
            assert again.registered


def test_forked_child_readers_are_unusable_and_keep_the_parents_slot(core: str, path: str) -> None:
    mp.Pager.create(path, 1024).close()
    ro = mp.ReadOnlyPager.open(path)
    pid = os.fork()
    if pid == 0:  # the child: its copy is unusable, and closing it must not free the slot
        code = 0
        try:
            _ = ro.generation
            code = 1
        except mp.Unavailable:
            pass
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [r.pid for r in mp.readers(path)] == [os.getpid()]  # still registered
    ro.close()
    assert mp.readers(path) == []


def test_a_forked_child_outliving_its_parent_does_not_keep_the_parents_slot(
    core: str, path: str
) -> None:
    """The slot is the lock of an open file description, which lives while any descriptor of
    it does: a child forked after the open must hold none, or a parent killed by SIGKILL
    would stay registered, holding reclamation back, for as long as the child runs."""
    mp.Pager.create(path, 1024).close()
    code = textwrap.dedent(
        """
        import os, sys, time
        import mappedpages as mp
        ro = mp.ReadOnlyPager.open(sys.argv[1])
        if os.fork() == 0:  # the child tells its pid once the fork hooks have run
            print(os.getpid(), flush=True)
            time.sleep(120)
            os._exit(0)
        time.sleep(120)
        """
    )
    env = {**os.environ, "MAPPEDPAGES_CORE": core}
    parent = subprocess.Popen(
        [sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True, env=env
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert [r.pid for r in mp.readers(path)] == [parent.pid]
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=60)
        os.kill(child, 0)  # the child lives on
        assert mp.readers(path) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        parent.stdout.close()


def test_snapshots_of_every_state_match_the_writer(core: str, path: str) -> None:
    """A snapshot after each of many calls shows exactly what the writer showed then."""
    with mp.Pager.create(path, 1024, sync=False) as p:
        states = []
        snaps = []
        regular: list[mp.PageId] = []
        prot: list[mp.ProtectedPageId] = []
        for i in range(300):
            if i % 5 == 0:
                prot += p.alloc_protected_bulk(2)
            elif i % 5 == 1 and prot:
                _write(p, prot[i % len(prot)], b"%05d" % i)
            elif i % 5 == 2:
                regular += p.alloc_bulk(40)
            elif i % 5 == 3 and regular:
                p.free_bulk(regular[::3])
                regular = [x for x in regular if x not in set(regular[::3])]
            elif prot:
                p.free_protected(prot.pop(0))
            if i % 30 == 0:
                snaps.append(p.snapshot())
                states.append(pager_state(p))
        for snap, state in zip(snaps, states, strict=True):
            assert pager_state(snap) == state
            snap.close()
    check_ok(path)


def test_a_refresh_racing_the_writers_growth_sees_the_new_size(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer grows the file, then writes the record that names the new size. A reader
    that took the file's size before the growth and read the record after would think the
    file truncated; it must take the size after reading the records. The race is made
    certain here by committing the growth inside the reader's read of the records, which only
    the pure core lets a test reach (csrc/snapshot.c's newest() has the same order)."""
    from mappedpages import _backend
    from mappedpages._core_py import snapshot as snap_mod

    with (
        _backend.using("python"),
        mp.Pager.create(path, 1024, sync=False, preallocate=False) as p,
    ):
        ro = mp.ReadOnlyPager.open(path)
        real = snap_mod.read_slots
        grown: list[int] = []

        def grow_then_read(*args: object, **kwargs: object) -> object:
            if not grown:
                before = os.path.getsize(path)
                p.alloc_bulk(p.page_count * 4)  # past the file's end: it grows
                grown.append(os.path.getsize(path) - before)
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(snap_mod, "read_slots", grow_then_read)
        p.alloc()  # something new for the reader to refresh to
        assert ro.refresh()
        assert grown and grown[0] > 0
        assert ro.generation == p.generation and ro.page_count == p.page_count
        ro.close()
