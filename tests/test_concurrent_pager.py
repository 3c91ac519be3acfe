"""ConcurrentPager and its readers-writer lock."""

from __future__ import annotations

import random
import threading

import pytest

import mappedpages as mp
from mappedpages.checker import check_file
from mappedpages.concurrent_pager import ConcurrentPager
from mappedpages.rwlock import RWLock

T = 10  # seconds: a bug fails the test instead of hanging it


def _in_thread(fn) -> threading.Thread:  # type: ignore[no-untyped-def]
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_two_readers_at_once() -> None:
    lock = RWLock()
    both = threading.Barrier(2, timeout=T)

    def reader() -> None:
        lock.acquire_read()
        both.wait()  # would time out if the second reader were excluded
        lock.release_read()

    threads = [_in_thread(reader) for _ in range(2)]
    for t in threads:
        t.join(T)
    assert not both.broken


def test_writer_excludes_and_writers_go_first() -> None:
    lock = RWLock()
    lock.acquire_read()
    assert not lock.acquire_write(blocking=False)  # this thread reads: not now, not an error
    assert not _call_in_thread(lambda: lock.acquire_write(blocking=False))
    got_write = threading.Event()

    def writer() -> None:
        lock.acquire_write()
        got_write.set()
        lock.release_write()

    t = _in_thread(writer)
    for _ in range(1000):  # wait until the writer is queued
        if lock._waiting_writers:
            break
        threading.Event().wait(0.001)
    assert lock._waiting_writers == 1

    def other_reader() -> bool:
        return lock.acquire_read(blocking=False)

    result: list[bool] = []
    _in_thread(lambda: result.append(other_reader())).join(T)
    assert result == [False]  # a waiting writer blocks new readers
    assert not got_write.is_set()
    lock.release_read()
    t.join(T)
    assert got_write.is_set()
    assert lock.acquire_write(blocking=False)
    assert not _call_in_thread(lambda: lock.acquire_read(blocking=False))
    lock.release_write()


def _call_in_thread(fn):  # type: ignore[no-untyped-def]
    out = []
    _in_thread(lambda: out.append(fn())).join(T)
    return out[0]


def test_misuse_is_an_error() -> None:
    lock = RWLock()
    with pytest.raises(RuntimeError):
        lock.release_read()
    with pytest.raises(RuntimeError):
        lock.release_write()
    lock.acquire_write()
    with pytest.raises(RuntimeError):
        lock.acquire_write()
    with pytest.raises(RuntimeError):
        lock.acquire_read()
    lock.release_write()
    lock.acquire_read()
    with pytest.raises(RuntimeError):
        lock.acquire_write()
    lock.release_read()
    assert "readers=0" in repr(lock)


def test_try_read_and_try_write_raise_would_block(pager: mp.Pager) -> None:
    cp = ConcurrentPager(pager)
    holding, release = threading.Event(), threading.Event()

    def hold_write() -> None:
        with cp.write():
            holding.set()
            release.wait(T)

    t = _in_thread(hold_write)
    assert holding.wait(T)
    with pytest.raises(mp.WouldBlock), cp.try_read():
        pass
    with pytest.raises(mp.WouldBlock), cp.try_write():
        pass
    release.set()
    t.join(T)
    with cp.try_read() as r:
        assert r.page_count == pager.page_count
    with cp.try_write() as w:
        assert w is pager
    with cp.read(), pytest.raises(mp.WouldBlock), cp.try_write():
        pass


def test_read_guard_offers_only_reading(pager: mp.Pager) -> None:
    pid = pager.alloc()
    ppid = pager.alloc_protected()
    cp = ConcurrentPager(pager)
    with cp.read() as r:
        assert list(r.iter_allocated_pages()) == [pid]
        assert list(r.iter_allocated_protected_pages()) == [ppid]
        assert len(r.get_page(pid)) == 1024
        assert bytes(r.get_protected_page(ppid)) == bytes(1024)
        assert (r.page_size, r.path) == (1024, pager.path)
        assert r.free_page_count == pager.free_page_count
        for name in ("alloc", "free", "alloc_bulk", "get_page_mut", "close", "batch"):
            with pytest.raises(AttributeError):
                getattr(r, name)
        with pytest.raises(TypeError):
            r.get_page(pid)[0] = 1
    with pytest.raises(mp.Unavailable):
        r.get_page(pid)  # the guard ended with its block
    with cp.write() as w:
        assert w.alloc() != pid


def test_into_inner_waits_for_readers(pager: mp.Pager) -> None:
    cp = ConcurrentPager(pager)
    inside, leave = threading.Event(), threading.Event()

    def reader() -> None:
        with cp.read():
            inside.set()
            leave.wait(T)

    t = _in_thread(reader)
    assert inside.wait(T)
    got: list[mp.Pager] = []
    taker = _in_thread(lambda: got.append(cp.into_inner()))
    taker.join(0.2)
    assert not got  # still waiting for the reader
    leave.set()
    taker.join(T)
    t.join(T)
    assert got == [pager]
    for call in (cp.read, cp.write, cp.try_read, cp.try_write):
        with pytest.raises(mp.Unavailable), call():
            pass
    with pytest.raises(mp.Unavailable):
        cp.into_inner()
    assert "released" in repr(cp)


def test_needs_a_pager() -> None:
    with pytest.raises(TypeError):
        ConcurrentPager(object())  # type: ignore[arg-type]


def test_many_threads_readers_and_writers(pager: mp.Pager) -> None:
    cp = ConcurrentPager(pager)
    model: dict[int, bytes] = {}  # page -> the 8 bytes its writer put there
    protected: dict[mp.ProtectedPageId, bytes] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(150):
                with cp.write() as p:
                    if model and rng.random() < 0.4:
                        victim = rng.choice(sorted(model))
                        p.free(mp.PageId(victim, 1024))
                        del model[victim]
                    else:
                        pid = p.alloc()
                        data = rng.randbytes(8)
                        p.get_page_mut(pid)[:8] = data
                        model[int(pid)] = data
                    if rng.random() < 0.1:
                        ppid = p.alloc_protected()
                        data = rng.randbytes(8)
                        with ppid.get_mut(p) as w:
                            w.page_mut()[:8] = data
                        protected[ppid] = data
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                with cp.read() as r:
                    pages = [int(x) for x in r.iter_allocated_pages()]
                    assert pages == sorted(model)
                    for page in pages:
                        assert bytes(r.get_page(mp.PageId(page, 1024))[:8]) == model[page]
                    for ppid, data in list(protected.items()):
                        assert bytes(r.get_protected_page(ppid)[:8]) == data
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(s,)) for s in range(4)]
    readers = [threading.Thread(target=reader) for _ in range(5)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    for t in readers:
        t.join(60)
    assert not errors, errors[0]
    p = cp.into_inner()
    assert [int(x) for x in p.iter_allocated_pages()] == sorted(model)
    assert list(p.iter_allocated_protected_pages()) == sorted(protected)
    internal = p.page_count - p.free_page_count - len(model)  # reserved, tree blocks, contents
    assert internal >= 3 + len(protected)
    p.close()
    assert check_file(p.path, mp.crc32c).internal_pages == internal
