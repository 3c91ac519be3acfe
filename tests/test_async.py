"""The asyncio methods: same results as the synchronous calls, and the loop keeps running."""

from __future__ import annotations

import asyncio
import threading
import time

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
        in_sync = threading.Event()

        def slow_barrier(kind: str) -> None:  # a disk that takes its time to sync
            in_sync.set()
            time.sleep(0.3)

        p._core.set_barrier_hook(slow_barrier)
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                await asyncio.sleep(0.01)
                if in_sync.is_set():
                    ticks += 1

        task = asyncio.create_task(ticker())
        pid = await p.alloc_async()
        done = True
        await task
        p._core.set_barrier_hook(None)
        assert list(p.iter_allocated_pages()) == [pid]
    # two barriers of 0.3 s each: a blocked loop would not have ticked at all
    assert ticks >= 10


@pytest.mark.asyncio
async def test_async_calls_run_one_at_a_time(pager: mp.Pager) -> None:
    results = await asyncio.gather(*(pager.alloc_async() for _ in range(50)))
    assert len(set(results)) == 50
    assert sorted(results) == list(pager.iter_allocated_pages())
    await asyncio.gather(*(pager.free_async(pid) for pid in results))
    assert list(pager.iter_allocated_pages()) == []
