"""The asyncio methods: same results as the synchronous calls, and the loop keeps running."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import mappedpages as mp


@pytest.mark.asyncio
async def test_every_async_method(pager: mp.Pager) -> None:
    pid = await pager.alloc_async()
    ids = await pager.alloc_bulk_async(5)
    await pager.free_async(pid)
    with pytest.raises(mp.DoubleFree):
        await pager.free_async(pid)
    await pager.free_bulk_async(ids[:2])
    assert list(pager.iter_allocated_pages()) == ids[2:]
    ppid = await pager.alloc_protected_async()
    more = await pager.alloc_protected_bulk_async(3)
    await pager.free_protected_async(ppid)
    await pager.free_protected_bulk_async(more[1:])
    assert list(pager.iter_allocated_protected_pages()) == [more[0]]
    await pager.flush_async()
    with pytest.raises(mp.ReservedPage):
        await pager.free_bulk_async([mp.PageId(0, 1024)])


@pytest.mark.asyncio
async def test_loop_keeps_ticking_while_a_commit_syncs(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=True) as p:
        slow = _slow_disk(p)
        got: list[mp.PageId] = []

        async def alloc() -> None:
            got.append(await p.alloc_async())

        ticks = await _ticks_while(alloc, slow)
        p._core.set_barrier_hook(None)
        assert list(p.iter_allocated_pages()) == got
    # two barriers of 0.3 s each: a blocked loop would not have ticked at all
    assert ticks >= 10


@pytest.mark.asyncio
async def test_async_calls_run_one_at_a_time(pager: mp.Pager) -> None:
    results = await asyncio.gather(*(pager.alloc_async() for _ in range(50)))
    assert len(set(results)) == 50
    assert sorted(results) == list(pager.iter_allocated_pages())
    await asyncio.gather(*(pager.free_async(pid) for pid in results))
    assert list(pager.iter_allocated_pages()) == []


# -- every blocking form keeps the loop running ----------------------------------------------


async def _ticks_while(call: Callable[[], Awaitable[object]], slow: threading.Event) -> int:
    """How often the loop ticked while ``call`` waited in a slow sync (``slow`` set)."""
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            await asyncio.sleep(0.01)
            if slow.is_set():
                ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await call()
    finally:
        done = True
        await task
    return ticks


def _slow_disk(p: mp.Pager) -> threading.Event:
    """A barrier hook for a disk that takes 0.3 s per sync; the event is set at the first."""
    slow = threading.Event()

    def barrier(kind: str) -> None:
        slow.set()
        time.sleep(0.3)

    p._core.set_barrier_hook(barrier)
    return slow


@pytest.mark.asyncio
async def test_commit_async_flush_async_and_shrink_async_keep_the_loop_running(
    core: str, path: str
) -> None:
    with mp.Pager.create(path, 1024, sync=True) as p:
        ppid = p.alloc_protected()
        ids = p.alloc_bulk(3000)
        writer = ppid.get_mut(p)
        writer.page_mut()[:5] = b"async"
        p.get_page_mut(ids[0])[:3] = b"abc"
        p.free_bulk(ids[1:])
        slow = _slow_disk(p)
        assert await _ticks_while(writer.commit_async, slow) >= 10
        slow.clear()
        assert await _ticks_while(lambda: p.flush_async([ids[0]]), slow) >= 10
        slow.clear()
        before = p.page_count
        assert await _ticks_while(p.shrink_async, slow) >= 10
        p._core.set_barrier_hook(None)
        assert p.page_count < before
        assert bytes(p.get_protected_page(ppid)[:5]) == b"async"
    with mp.Pager.open(path) as p:
        assert bytes(p.get_protected_page(ppid)[:5]) == b"async"
        assert bytes(p.get_page(ids[0])[:3]) == b"abc"


@pytest.mark.asyncio
async def test_batch_async_commits_once_off_the_loop(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=True) as p:
        gen = p.generation
        slow = _slow_disk(p)
        got: list[mp.PageId] = []

        async def transaction() -> None:
            async with p.batch_async() as b:
                assert b is p and p.in_batch
                got.extend(p.alloc_bulk(3))
                await asyncio.sleep(0)  # the block may await
                got.append(await p.alloc_async())  # runs at once, inside the batch
                with p.batch():  # a batch inside joins it
                    p.free(got.pop(0))
            assert not p.in_batch

        assert await _ticks_while(transaction, slow) >= 10
        p._core.set_barrier_hook(None)
        assert p.generation == gen + 1  # one commit for all of it
        assert list(p.iter_allocated_pages()) == got
    with mp.Pager.open(path) as p:
        assert list(p.iter_allocated_pages()) == got


@pytest.mark.asyncio
async def test_batch_async_keeps_nothing_when_its_block_raises(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        keep = p.alloc()
        with pytest.raises(KeyError):
            async with p.batch_async():
                p.alloc_bulk(10)
                p.free(keep)
                raise KeyError("rolled back")
        assert list(p.iter_allocated_pages()) == [keep]
        async with p.batch_async():
            more = p.alloc()
        assert list(p.iter_allocated_pages()) == [keep, more]


@pytest.mark.asyncio
async def test_another_thread_waits_for_an_async_batch_to_commit(core: str, path: str) -> None:
    """While the batch commits in a worker, another thread's call waits for the commit, and
    never joins the batch or sees half of it."""
    with mp.Pager.create(path, 1024, sync=True) as p:
        slow = _slow_disk(p)
        seen: list[int] = []

        def other() -> None:
            slow.wait()
            seen.append(len(list(p.iter_allocated_pages())))
            p.alloc()

        thread = threading.Thread(target=other)
        thread.start()
        async with p.batch_async():
            p.alloc_bulk(5)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        p._core.set_barrier_hook(None)
        assert seen == [5] and len(list(p.iter_allocated_pages())) == 6


@pytest.mark.asyncio
async def test_a_cancelled_async_batch_keeps_what_its_commit_did(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=True) as p:
        slow = _slow_disk(p)

        async def transaction() -> None:
            async with p.batch_async():
                p.alloc_bulk(4)

        task = asyncio.create_task(transaction())
        await asyncio.get_running_loop().run_in_executor(None, slow.wait)
        task.cancel()  # during the commit: it goes on, and its outcome stands
        with pytest.raises(asyncio.CancelledError):
            await task
        p._core.set_barrier_hook(None)
        assert len(list(p.iter_allocated_pages())) == 4 and not p.in_batch
        p.alloc()  # the pager is usable, its batch closed
    with mp.Pager.open(path) as p:
        assert len(list(p.iter_allocated_pages())) == 5


@pytest.mark.asyncio
async def test_refresh_async_and_backup_async_keep_the_loop_running(
    core: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mappedpages import readonly

    src = str(tmp_path / "src.mp")
    slow = threading.Event()
    real_refresh, real_fsync = readonly.refresh, os.fsync

    def slow_refresh(*args: Any) -> bool:  # a file read from a slow disk
        slow.set()
        time.sleep(0.3)
        return real_refresh(*args)

    def slow_fsync(fd: int) -> None:
        slow.set()
        time.sleep(0.3)
        real_fsync(fd)

    with mp.Pager.create(src, 1024, sync=False) as p, mp.ReadOnlyPager.open(src) as ro:
        p.alloc_bulk(10)
        monkeypatch.setattr(readonly, "refresh", slow_refresh)
        assert await _ticks_while(ro.refresh_async, slow) >= 10
        assert ro.page_count == p.page_count and len(list(ro.iter_allocated_pages())) == 10
        monkeypatch.setattr(os, "fsync", slow_fsync)
        for who, name in ((p, "p.mp"), (ro, "ro.mp")):
            slow.clear()
            dest = tmp_path / name
            assert await _ticks_while(lambda w=who, d=dest: w.backup_async(d), slow) >= 10
        with p.snapshot() as snap:
            slow.clear()
            assert await _ticks_while(lambda: snap.backup_async(tmp_path / "s.mp"), slow) >= 10
    monkeypatch.undo()
    for name in ("p.mp", "ro.mp", "s.mp"):
        with mp.ReadOnlyPager.open(tmp_path / name) as copy:
            assert len(list(copy.iter_allocated_pages())) == 10
