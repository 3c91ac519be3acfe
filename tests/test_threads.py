"""One Pager shared by threads: every call is serialized inside, a batch belongs to its thread.

The hammer and the async mix run in subprocesses (thread_workers.py), so that a crash is a
failed run rather than a dead pytest process. MAPPEDPAGES_THREAD_RUNS sets the number of
hammer runs per core and durability (default 2), MAPPEDPAGES_ASYNC_RUNS the async mixes
(default 20).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import mappedpages as mp
from helpers import check_ok, count

WORKERS = Path(__file__).with_name("thread_workers.py")
RUNS = int(os.environ.get("MAPPEDPAGES_THREAD_RUNS", "2"))
ASYNC_RUNS = int(os.environ.get("MAPPEDPAGES_ASYNC_RUNS", "20"))


def _worker(core: str, *args: object) -> dict[str, object]:
    env = {**os.environ, "MAPPEDPAGES_CORE": core}
    out = subprocess.run(
        [sys.executable, str(WORKERS), *map(str, args)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, f"the worker died ({out.returncode}): {out.stderr[-3000:]}"
    result: dict[str, object] = json.loads(out.stdout)
    assert result["errors"] == [], result["errors"]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("sync", [False, True], ids=["nosync", "durable"])
def test_eight_threads_hammering_one_pager(core: str, tmp_path: Path, sync: bool) -> None:
    steps = 150 if sync else 400
    for run in range(RUNS):
        path = tmp_path / f"run{run}.mp"
        result = _worker(core, "hammer", path, int(sync), 8, steps, run)
        count(f"thread hammer runs, 8 threads ({core})")
        count(f"thread hammer commits ({core})", int(result["commits"]))  # type: ignore[call-overload]


@pytest.mark.slow
def test_async_methods_mixed_with_plain_calls(core: str, tmp_path: Path) -> None:
    result = _worker(core, "asyncmix", tmp_path / "mix.mp", ASYNC_RUNS, 7)
    count(f"async mixes with plain calls ({core})", int(result["runs"]))  # type: ignore[call-overload]


def _in_thread(fn: object) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())  # type: ignore[operator]
        except BaseException as e:  # handed to the test
            out.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_another_threads_call_waits_for_a_batch_and_is_not_rolled_back(
    core: str, path: str
) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        kept = p.alloc()
        with pytest.raises(KeyError), p.batch():
            p.free(kept)
            inside = p.alloc()
            t, out = _in_thread(p.alloc)
            t.join(0.3)
            assert t.is_alive() and not out  # waiting for the batch to end
            assert p.in_batch
            raise KeyError("roll back")
        t.join(10)
        assert not t.is_alive()
        (theirs,) = out
        assert isinstance(theirs, mp.PageId)
        # the batch rolled back; the other thread's page, allocated after it, is committed
        assert set(p.iter_allocated_pages()) == {kept, theirs}
        assert not p.is_allocated(inside) or inside == theirs
    with mp.Pager.open(path) as p:
        assert set(p.iter_allocated_pages()) == {kept, theirs}
    check_ok(path)


def test_in_batch_is_per_thread(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        with p.batch():
            t, out = _in_thread(lambda: p.in_batch)
            t.join(10)
            assert out == [False]
            assert p.in_batch
        assert not p.in_batch


def test_another_threads_batch_waits_for_the_first(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        order: list[str] = []

        def second() -> None:
            with p.batch():
                order.append("second")
                p.alloc()

        with p.batch():
            p.alloc()
            t, out = _in_thread(second)
            time.sleep(0.2)
            order.append("first")
        t.join(10)
        assert order == ["first", "second"] and out == [None]
        assert len(list(p.iter_allocated_pages())) == 2


def test_close_from_another_thread_waits_for_the_batch(core: str, path: str) -> None:
    p = mp.Pager.create(path, 1024, sync=False)
    with p.batch():
        pid = p.alloc()
        t, out = _in_thread(p.close)
        t.join(0.2)
        assert t.is_alive()
    t.join(10)
    assert out == [None]
    with pytest.raises(mp.Unavailable):
        p.alloc()
    with mp.Pager.open(path) as p2:
        assert list(p2.iter_allocated_pages()) == [pid]


@pytest.mark.asyncio
async def test_an_async_call_inside_the_loop_threads_batch_runs_at_once(pager: mp.Pager) -> None:
    with pager.batch():
        pid = await asyncio.wait_for(pager.alloc_async(), 10)
        await asyncio.wait_for(pager.free_async(pid), 10)
        assert pager.in_batch
    assert list(pager.iter_allocated_pages()) == []


def test_readers_and_refresh_from_many_threads(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as w:
        ppid = w.alloc_protected()
        with mp.ReadOnlyPager.open(path) as ro:
            stop = threading.Event()
            errors: list[BaseException] = []

            def read() -> None:
                try:
                    while not stop.is_set():
                        ro.refresh()
                        seen = ro.generation
                        data = bytes(ro.get_protected_page(ppid)[:8])
                        if ro.generation == seen:  # no other thread moved it on meanwhile
                            assert data[:4] == data[4:], data
                        with contextlib.suppress(RuntimeError):  # another thread refreshed
                            sum(1 for _ in ro.iter_allocated_pages())
                except BaseException as e:
                    errors.append(e)

            threads = [threading.Thread(target=read) for _ in range(4)]
            for t in threads:
                t.start()
            for n in range(300):
                with ppid.get_mut(w) as m:
                    m.page_mut()[:8] = n.to_bytes(4, "little") * 2
                w.free(w.alloc())
            stop.set()
            for t in threads:
                t.join(30)
            assert errors == []
