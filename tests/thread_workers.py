"""Workloads that share one Pager between threads (every mutating call, shrinks and backups
included), run in a subprocess by test_threads.py (a crash there is a failed run, not a dead
pytest process).

    python thread_workers.py hammer PATH SYNC THREADS STEPS SEED
    python thread_workers.py asyncmix PATH RUNS SEED

Each prints one JSON object: what went wrong (nothing, if all is well) and what was checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import threading
import traceback
from typing import Any

import mappedpages as mp
from mappedpages.checker import check_file

PS = 1024


def _stamp(tag: int, n: int) -> bytes:
    return (tag.to_bytes(4, "little") + n.to_bytes(4, "little")) * (PS // 8)


class Worker:
    """One thread's share of the work: it only frees and writes what it allocated itself, and
    remembers what each of its pages must hold, so that the end state can be compared."""

    def __init__(self, p: mp.Pager, tag: int, seed: int, steps: int) -> None:
        self.p = p
        self.tag = tag
        self.rng = random.Random(seed)
        self.steps = steps
        self.pages: dict[mp.PageId, bytes] = {}
        self.protected: dict[mp.ProtectedPageId, bytes] = {}
        self.errors: list[str] = []
        self.n = 0

    def _write(self, pid: mp.PageId) -> None:
        self.n += 1
        data = _stamp(self.tag, self.n)
        self.p.get_page_mut(pid)[:] = data
        self.pages[pid] = data

    def _pwrite(self, ppid: mp.ProtectedPageId) -> None:
        self.n += 1
        data = _stamp(self.tag, self.n)
        with ppid.get_mut(self.p) as w:
            w.page_mut()[:] = data
        self.protected[ppid] = data

    def step(self) -> None:
        p, rng = self.p, self.rng
        k = rng.randrange(14)
        if k == 0:
            self._write(p.alloc())
        elif k == 1 and self.pages:
            pid = rng.choice(list(self.pages))
            del self.pages[pid]
            p.free(pid)
        elif k == 2:
            for pid in p.alloc_bulk(rng.randrange(1, 6)):
                self._write(pid)
        elif k == 3 and self.pages:
            gone = rng.sample(list(self.pages), min(len(self.pages), rng.randrange(1, 4)))
            for pid in gone:
                del self.pages[pid]
            p.free_bulk(gone)
        elif k == 4:
            self.protected[p.alloc_protected()] = bytes(PS)
        elif k == 5 and self.protected:
            self._pwrite(rng.choice(list(self.protected)))
        elif k == 6 and self.protected:
            ppid = rng.choice(list(self.protected))
            del self.protected[ppid]
            p.free_protected(ppid)
        elif k == 7:
            for ppid in p.alloc_protected_bulk(rng.randrange(1, 4)):
                self.protected[ppid] = bytes(PS)
        elif k == 8 and self.protected:
            gone_p = rng.sample(list(self.protected), min(len(self.protected), 2))
            for ppid in gone_p:
                del self.protected[ppid]
            p.free_protected_bulk(gone_p)
        elif k == 9:
            self._batch(fail=rng.random() < 0.3)
        elif k == 10 and self.pages:
            pid = rng.choice(list(self.pages))
            if bytes(p.get_page(pid)) != self.pages[pid]:
                self.errors.append(f"page {int(pid)} does not hold what thread {self.tag} wrote")
            p.flush([pid])
        elif k == 11:
            # the pager's own iterators stop with RuntimeError once another thread changes
            # its state (as a dict's do); a snapshot's hold still
            with p.snapshot() as snap:
                sum(1 for _ in snap.iter_allocated_pages())
                for ppid in snap.iter_allocated_protected_pages():
                    snap.get_protected_page(ppid)
        elif k == 12 and rng.random() < 0.2:
            p.shrink()  # what the threads hold is in use: never cut
        elif k == 13 and rng.random() < 0.1:
            copy = f"{p.path}.{self.tag}.copy"
            p.backup(copy)
            try:
                with mp.ReadOnlyPager.open(copy) as ro:
                    if not check_file(copy, mp.crc32c).ok:
                        self.errors.append(f"a backup by thread {self.tag} does not check clean")
                    sum(1 for _ in ro.iter_allocated_pages())
            finally:
                for leftover in (copy, copy + "-readers"):
                    if os.path.exists(leftover):
                        os.unlink(leftover)

    def _batch(self, fail: bool) -> None:
        pages, protected = dict(self.pages), dict(self.protected)
        try:
            with self.p.batch():
                self._write(self.p.alloc())
                if self.pages and self.rng.random() < 0.5:
                    pid = self.rng.choice(list(self.pages))
                    del self.pages[pid]
                    self.p.free(pid)
                self.protected[self.p.alloc_protected()] = bytes(PS)
                if fail:
                    raise KeyError("roll back")
        except KeyError:
            # the rollback returns the allocation state; data written in place stays written
            kept = {pid: self.pages.get(pid, data) for pid, data in pages.items()}
            self.pages, self.protected = kept, protected

    def run(self) -> None:
        try:
            for _ in range(self.steps):
                self.step()
        except Exception:
            self.errors.append(traceback.format_exc())


def hammer(path: str, sync: bool, threads: int, steps: int, seed: int) -> dict[str, Any]:
    with mp.Pager.create(path, PS, sync=sync) as p:
        workers = [Worker(p, t + 1, seed * 1000 + t, steps) for t in range(threads)]
        started = [threading.Thread(target=w.run) for w in workers]
        for t in started:
            t.start()
        for t in started:
            t.join()
        errors = [e for w in workers for e in w.errors]
        generation = p.generation
    pages = {pid: data for w in workers for pid, data in w.pages.items()}
    protected = {ppid: data for w in workers for ppid, data in w.protected.items()}
    with mp.Pager.open(path) as p:  # the file holds exactly what the threads believe
        if p.generation != generation:
            errors.append(f"reopened at generation {p.generation}, closed at {generation}")
        if set(p.iter_allocated_pages()) != set(pages):
            errors.append("the allocated pages differ from the union of the threads' pages")
        if set(p.iter_allocated_protected_pages()) != set(protected):
            errors.append("the protected pages differ from the union of the threads' pages")
        if not errors:
            for pid, data in pages.items():
                if bytes(p.get_page(pid)) != data:
                    errors.append(f"page {int(pid)} lost its content")
            for ppid, data in protected.items():
                if bytes(p.get_protected_page(ppid)) != data:
                    errors.append(f"protected page {int(ppid)} lost its content")
    report = check_file(path, mp.crc32c)
    if not report.ok:
        errors.append(f"check: {report.problems}")
    return {
        "errors": errors,
        "commits": generation,
        "pages": len(pages),
        "protected": len(protected),
    }


async def _mix(p: mp.Pager, rng: random.Random) -> list[str]:
    """Async calls (worker threads) and plain calls (the loop's thread) on one pager."""
    mine: list[mp.PageId] = []
    prot: list[mp.ProtectedPageId] = []

    async def async_side() -> None:
        for _ in range(20):
            mine.append(await p.alloc_async())
            mine.extend(await p.alloc_bulk_async(2))
            prot.append(await p.alloc_protected_async())
            if len(mine) > 4:
                await p.free_async(mine.pop(0))
                await p.free_bulk_async([mine.pop(0)])
            if len(prot) > 2:
                await p.free_protected_async(prot.pop(0))
            await p.flush_async()

    async def plain_side() -> None:
        for _ in range(40):
            pid = p.alloc()
            p.get_page_mut(pid)[:4] = b"sync"
            with p.batch():
                other = p.alloc()
                p.free(pid)
                # inside the loop thread's batch an async call runs at once, on this thread
                extra = await p.alloc_async()
            p.free_bulk([other, extra])
            with p.snapshot() as snap:
                sum(1 for _ in snap.iter_allocated_pages())
            await asyncio.sleep(0)

    await asyncio.gather(async_side(), plain_side())
    expected = set(mine)
    if set(p.iter_allocated_pages()) != expected:
        return ["the allocated pages differ from what the calls returned"]
    if set(p.iter_allocated_protected_pages()) != set(prot):
        return ["the protected pages differ from what the calls returned"]
    return []


def asyncmix(path: str, runs: int, seed: int) -> dict[str, Any]:
    errors: list[str] = []
    rng = random.Random(seed)
    for run in range(runs):
        run_path = f"{path}.{run}"
        try:
            with mp.Pager.create(run_path, PS, sync=False) as p:
                errors += asyncio.run(_mix(p, rng))
        except Exception:
            errors.append(traceback.format_exc())
        report = check_file(run_path, mp.crc32c)
        if not report.ok:
            errors.append(f"check: {report.problems}")
    return {"errors": errors, "runs": runs}


def main(argv: list[str]) -> None:
    what = argv[1]
    if what == "hammer":
        out = hammer(argv[2], argv[3] == "1", int(argv[4]), int(argv[5]), int(argv[6]))
    else:
        out = asyncmix(argv[2], int(argv[3]), int(argv[4]))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
