"""What snapshots cost, measured for ``mappedpages bench`` and the benchmark suite.

Each function returns ratios of two things timed in the same run (with and without readers, a
large file and a fresh one), since one machine's noise shifts both sides alike. Reader
processes are started with ``spawn``: each is a fresh interpreter that opens the file itself,
as an outside reader would.
"""

from __future__ import annotations

import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from . import _backend
from ._readertable import table_path
from .handles import ProtectedPageId
from .pager import Pager
from .readonly import ReadOnlyPager

__all__ = [
    "ReaderLoad",
    "alloc_protected_full_vs_fresh",
    "big_file",
    "commit_under_readers",
    "refresh_costs",
]

BIG_PAGES = 1 << 21  # pages of the large file (1 KiB each: 2 GiB, sparse)
BIG_PROTECTED = 1 << 20  # of which protected


# the control file the reader processes share with the bench: byte 0 says "refresh now",
# byte 1 "stop"; reader i counts its refreshes in the u64 at 8 + 8 * i
ACTIVE, STOP, COUNTS = 0, 1, 8


def _reader_loop(path: str, core: str, index: int, control: str, me: int) -> None:
    """Refresh and read one protected page while the control file says so."""
    with open(control, "r+b") as f:
        ctl = mmap.mmap(f.fileno(), 0)
    counter = memoryview(ctl)[COUNTS + 8 * me : COUNTS + 8 * me + 8].cast("Q")
    with _backend.using(core), ReadOnlyPager.open(path) as r:
        ppid = ProtectedPageId(index, r.page_size)
        counter[0] = 1  # registered: the writer sees this reader from now on
        while not ctl[STOP]:
            if not ctl[ACTIVE]:
                time.sleep(0.01)
                continue
            for _ in range(64):
                r.refresh()
                r.get_protected_page(ppid)[0]
            counter[0] += 64
    counter.release()
    ctl.close()


class ReaderLoad:
    """Reader processes refreshing continuously, switched on and off between timings."""

    def __init__(self, path: str, core: str, ppid: ProtectedPageId, n: int) -> None:
        fd, self._control = tempfile.mkstemp(dir=os.path.dirname(path) or ".")
        os.ftruncate(fd, COUNTS + 8 * n)
        self._ctl = mmap.mmap(fd, 0)
        os.close(fd)
        self._counts = memoryview(self._ctl)[COUNTS:].cast("Q")
        self._procs = [
            subprocess.Popen(
                [sys.executable, "-m", __name__, path, core, str(ppid.index), self._control, str(i)]
            )
            for i in range(n)
        ]

    def wait_registered(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not all(self._counts):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self._procs):
                raise RuntimeError("a reader process failed to start")
            time.sleep(0.01)

    def set_active(self, on: bool) -> None:
        self._ctl[ACTIVE] = on

    def refreshes(self) -> int:
        """Refreshes done so far by all readers."""
        return sum(self._counts) - len(self._procs)

    def close(self) -> None:
        self._ctl[STOP] = 1
        for proc in self._procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._counts.release()
        self._ctl.close()
        os.unlink(self._control)


@contextmanager
def reader_load(path: str, core: str, ppid: ProtectedPageId, n: int) -> Iterator[ReaderLoad]:
    """``n`` reader processes on ``path``, registered before this yields, idle until
    ``load.set_active(True)``."""
    load = ReaderLoad(path, core, ppid, n)
    try:
        load.wait_registered()
        yield load
    finally:
        load.close()


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_queue_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (0 where not reported)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class UnderReaders:
    without: float  # median seconds of a durable commit with the readers idle
    with_readers: float  # the same while they refresh continuously
    mean_without: float  # mean seconds of a commit, readers idle
    mean_with: float  # the same while they refresh
    wait_without: float  # mean seconds per commit spent waiting for a CPU, readers idle
    wait_with: float  # the same while they refresh
    refreshes: int  # refreshes the readers did meanwhile
    readers_seen: int  # snapshots the reader table listed during the run

    @property
    def ratio(self) -> float:
        """Median commit with the readers refreshing over median commit without them."""
        return self.with_readers / self.without

    @property
    def ratio_on_cpu(self) -> float:
        """The same of means, less the time the writer waited for a CPU: with more busy
        readers than CPUs, what readers cost the writer apart from sharing the CPUs."""
        return (self.mean_with - self.wait_with) / (self.mean_without - self.wait_without)


def commit_under_readers(
    directory: str,
    core: str,
    n_readers: int = 8,
    phases: int = 40,
    per_phase: int = 20,
) -> UnderReaders:
    """Durable protected write + commit, with ``n_readers`` processes idle and then refreshing
    and reading the same page, in alternating phases so that drift cancels out."""
    from . import readers

    path = os.path.join(directory, "readers.mp")
    record = bytes(range(256)) * 16
    times: dict[bool, list[float]] = {False: [], True: []}
    waits = {False: 0.0, True: 0.0}
    with Pager.create(path, 4096, sync=True) as p:
        ppid = p.alloc_protected()

        def replace() -> None:
            with ppid.get_mut(p) as w:
                w.page_mut()[:] = record

        with reader_load(path, core, ppid, n_readers) as load:
            seen = len(readers(path))
            for phase in range(2 * phases):
                loaded = phase % 2 == 1
                load.set_active(loaded)
                time.sleep(0.02)  # let the readers settle into the new phase
                before = run_queue_wait()
                times[loaded].extend(_timed(replace) for _ in range(per_phase))
                waits[loaded] += run_queue_wait() - before
            refreshes = load.refreshes()
    os.unlink(path)
    os.unlink(table_path(path))  # and the reader table beside it
    n = phases * per_phase
    return UnderReaders(
        statistics.median(times[False]),
        statistics.median(times[True]),
        statistics.fmean(times[False]),
        statistics.fmean(times[True]),
        waits[False] / n,
        waits[True] / n,
        refreshes,
        seen,
    )


def big_file(path: str) -> str:
    """A 1 KiB-page file of more than 2^21 pages, 2^20 of them protected (C core: quicker)."""
    with (
        _backend.using("c" if "c" in _backend.available() else "python"),
        Pager.create(path, 1024, sync=False, preallocate=False) as p,
    ):
        p.alloc_protected_bulk(BIG_PROTECTED)
        p.alloc_bulk(BIG_PAGES - p.page_count + 1)
    return path


@dataclass
class RefreshCosts:
    nothing_new: float  # seconds of a refresh() that finds no new commit
    after_commit_fresh: float  # refresh() after one commit, on a fresh file
    after_commit_big: float  # the same on the large file

    @property
    def ratio(self) -> float:
        return self.after_commit_big / self.after_commit_fresh


def _refresh_after_commit(path: str, rounds: int) -> float:
    """Median seconds of refresh() after one protected write + commit by a writer."""
    with Pager.open(path, sync=False, preallocate=False) as w, ReadOnlyPager.open(path) as r:
        ppid = w.alloc_protected()
        times = []
        for i in range(rounds):
            with ppid.get_mut(w) as m:
                m.page_mut()[:8] = i.to_bytes(8, "little")
            times.append(_timed(r.refresh))
        w.free_protected(ppid)
    return statistics.median(times)


def refresh_costs(directory: str, big: str, rounds: int = 400) -> RefreshCosts:
    """refresh() with nothing new, and after one commit on a fresh file and on ``big``."""
    fresh = os.path.join(directory, "fresh.mp")
    with Pager.create(fresh, 1024, sync=False) as p:
        p.alloc_protected()
    with ReadOnlyPager.open(fresh) as r:
        refresh = r.refresh
        best = float("inf")
        for _ in range(20):
            start = time.perf_counter()
            for _ in range(500):
                refresh()
            best = min(best, (time.perf_counter() - start) / 500)
    # alternate the two files so that drift over the run falls on both alike
    small: list[float] = []
    large: list[float] = []
    for _ in range(4):
        small.append(_refresh_after_commit(fresh, rounds // 4))
        large.append(_refresh_after_commit(big, rounds // 4))
    os.unlink(fresh)
    return RefreshCosts(best, statistics.median(small), statistics.median(large))


@dataclass
class AllocProtected:
    fresh: float  # median seconds of alloc_protected() (sync=False) on a fresh file
    full: float  # the same with 2^20 protected pages in the directory

    @property
    def ratio(self) -> float:
        return self.full / self.fresh


def alloc_protected_full_vs_fresh(directory: str, big: str, rounds: int = 2000) -> AllocProtected:
    """alloc_protected() on a fresh 1 KiB-page file and on ``big``, call by call alternately."""
    fresh = os.path.join(directory, "fresh.mp")
    small: list[float] = []
    large: list[float] = []
    with (
        Pager.create(fresh, 1024, sync=False) as a,
        Pager.open(big, sync=False, preallocate=False) as b,
    ):
        a.free_protected_bulk(a.alloc_protected_bulk(rounds))  # fresh, but grown once
        got_a, got_b = [], []
        for _ in range(rounds):
            small.append(_timed(lambda: got_a.append(a.alloc_protected())))
            large.append(_timed(lambda: got_b.append(b.alloc_protected())))
        a.free_protected_bulk(got_a)
        b.free_protected_bulk(got_b)
    os.unlink(fresh)
    return AllocProtected(statistics.median(small), statistics.median(large))


if __name__ == "__main__":  # a reader process of ReaderLoad
    args = sys.argv[1:]
    _reader_loop(args[0], args[1], int(args[2]), args[3], int(args[4]))
