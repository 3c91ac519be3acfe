"""``mappedpages bench``: a quick table of the C core against the pure-Python core.

Each operation is timed on both cores in this process, on a temporary file in the given
directory (default: the system's temporary directory, so pick a directory on the file system
you care about). Durable operations are also shown as a multiple of the floor: two
``msync(MS_SYNC)`` calls of one dirty page each on the same file system, timed alternately
with the operation, so that the drift of a virtual disk's sync latency over the run cancels
out of the ratio.
"""

from __future__ import annotations

import importlib
import mmap
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _backend
from .bench_cow import cow_table
from .pager import Pager


@dataclass
class Row:
    operation: str
    unit: str
    per_core: dict[str, float]  # seconds per unit, by core name
    durable: bool = False
    floor: dict[str, float] | None = None  # durable rows: the two-msync floor timed alongside


class Floor:
    """Barriers and nothing else: msync of one dirtied page (the mapping's first two pages),
    and pwrite+fdatasync of one page (the file's third)."""

    def __init__(self, directory: str) -> None:
        self._fd, self._path = tempfile.mkstemp(dir=directory)
        os.ftruncate(self._fd, 3 * mmap.PAGESIZE)
        self._map = mmap.mmap(self._fd, 2 * mmap.PAGESIZE)
        self._page = bytes(mmap.PAGESIZE)

    def msync(self, off: int = 0) -> None:
        m = self._map
        m[off] = (m[off] + 1) & 0xFF
        m.flush(off, mmap.PAGESIZE)

    def pair(self) -> None:
        self.msync(0)
        self.msync(mmap.PAGESIZE)

    def write_sync(self) -> None:
        os.pwrite(self._fd, self._page, 2 * mmap.PAGESIZE)
        os.fdatasync(self._fd)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
        os.unlink(self._path)


def _alongside(fn: Callable[[], object], floor: Floor, repeat: int) -> tuple[float, float]:
    """Median wall times of ``fn`` and of the floor, each call of one followed by the other."""
    times: list[float] = []
    floors: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        mid = time.perf_counter()
        floor.pair()
        times.append(mid - start)
        floors.append(time.perf_counter() - mid)
    return statistics.median(times), statistics.median(floors)


def _best(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` calls (the least disturbed by other work)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _median(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of single calls: what a durable call costs, syncs and all."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def msync_floor(directory: str, rounds: int = 200) -> tuple[float, float]:
    """Median seconds for msync(MS_SYNC) of one dirtied page, and for pwrite+fdatasync."""
    floor = Floor(directory)
    try:
        return _median(floor.msync, rounds), _median(floor.write_sync, rounds)
    finally:
        floor.close()


Record = Callable[..., None]


def _measure_core(core: str, tmp: str, quick: bool, record: Record) -> None:
    """Time every operation on the active core: ``record(op, unit, seconds, durable[, floor])``."""
    n = 2000 if quick else 20000
    rounds = 100 if quick else 500
    crc = _backend.CORE.crc32c
    path = os.path.join(tmp, "bench.mp")
    floor = Floor(tmp)

    def durable(op: str, fn: Callable[[], object], repeat: int) -> None:
        seconds, pair = _alongside(fn, floor, repeat)
        record(op, "call", seconds, True, pair)

    with Pager.create(path, 4096, sync=True) as p:
        p.free_bulk(p.alloc_bulk(1000))
        ids = p.alloc_bulk(100)
        durable("durable alloc()", p.alloc, rounds)
        durable("durable free()", lambda: p.free(ids.pop()), 100)
        record4 = bytes(range(256)) * 16
        ppid = p.alloc_protected()

        def replace() -> None:
            with ppid.get_mut(p) as w:
                w.page_mut()[:] = record4

        durable("protected write + commit", replace, rounds)
        durable("alloc_protected()", p.alloc_protected, rounds)
        p.free_bulk(p.alloc_bulk(100_000))  # grown once: time the call, not the growth
        times = []
        for _ in range(3):
            start = time.perf_counter()
            got = p.alloc_bulk(100_000)
            times.append(time.perf_counter() - start)
            p.free_bulk(got)
        record("alloc_bulk(100000)", "call", statistics.median(times), True)
        with p.batch():
            alloc, free = p.alloc, p.free

            def batched() -> None:
                for _ in range(n):
                    free(alloc())

            record("alloc()+free() in batch()", "call", _best(batched, 3) / (2 * n), False)
    os.unlink(path)
    with Pager.create(path, 1024, sync=True) as p:
        dirty = p.alloc_bulk(64)
        views = [p.get_page_mut(pid) for pid in dirty]

        def write_all() -> None:
            for v in views:
                v[0] = (v[0] + 1) & 0xFF

        def flush_ids() -> None:
            write_all()
            p.flush(dirty)

        def flush_all() -> None:
            write_all()
            p.flush()

        # the same pages synced by a bare msync of their span through a mapping of its own:
        # what the disk asks for them, the bound for either flush
        lo, hi = min(dirty).index * 1024, (max(dirty).index + 1) * 1024
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), hi) as bare:

            def msync_alone() -> None:
                write_all()
                start = lo // mmap.PAGESIZE * mmap.PAGESIZE
                bare.flush(start, hi - start)

            durable("durable flush(64 ids), 1 KiB pages", flush_ids, rounds)
            durable("durable flush(), 64 dirty 1 KiB pages", flush_all, rounds)
            durable("  bare msync of those 64 pages' span", msync_alone, rounds)
        for v in views:
            v.release()
    floor.close()
    os.unlink(path)
    with Pager.create(path, 4096, sync=False) as p:
        p.alloc_bulk(100)
        alloc, free = p.alloc, p.free
        m = n // 4

        def nosync() -> None:
            for _ in range(m):
                free(alloc())

        record("alloc()+free() sync=False", "call", _best(nosync, 3) / (2 * m), False)
        ids = p.alloc_bulk(1000)
        get = p.get_page

        def reads() -> None:
            for pid in ids:
                get(pid)

        record("get_page()", "call", _best(reads, 5) / len(ids), False)
    small, big = bytes(4096), bytes(1 << 20)

    def crc_small() -> None:
        for _ in range(100):
            crc(small)

    record("crc32c 4 KiB", "4 KiB", _best(crc_small, 3) / 100, False)
    record("crc32c 1 MiB", "1 MiB", _best(lambda: crc(big), 3 if core == "c" else 1), False)


def _optional(name: str) -> Any:
    """An optional peer library (extra ``bench``), or None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _lmdb_put(directory: str, lmdb: Any) -> tuple[float, float]:
    """Median seconds of a durable put of a 4 KiB value, and of the floor timed alongside."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        env = lmdb.open(tmp, map_size=1 << 30, sync=True, metasync=True)
        value = bytes(range(256)) * 16

        def put() -> None:
            with env.begin(write=True) as txn:
                txn.put(b"record", value)

        floor = Floor(tmp)
        try:
            seconds, pair = _alongside(put, floor, 100)
        finally:
            floor.close()
            env.close()
    return seconds, pair


def _sqlite_put(directory: str) -> tuple[float, float]:
    """The same with SQLite (WAL, synchronous=FULL: one fsync per commit)."""
    import sqlite3

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        db = sqlite3.connect(os.path.join(tmp, "peer.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        value = bytes(range(256)) * 16

        def put() -> None:
            db.execute("INSERT OR REPLACE INTO t VALUES (1, ?)", (value,))

        floor = Floor(tmp)
        try:
            seconds, pair = _alongside(put, floor, 100)
        finally:
            floor.close()
            db.close()
    return seconds, pair


def _peers(directory: str) -> list[tuple[str, float, float | None]]:
    """The same work done by other libraries, where they are installed, with the floor timed
    alongside where it is durable."""
    out: list[tuple[str, float, float | None]] = [
        ("SQLite durable put, 4 KiB value", *_sqlite_put(directory))
    ]
    lmdb = _optional("lmdb")
    if lmdb is not None:
        out.append(("LMDB durable put, 4 KiB value", *_lmdb_put(directory, lmdb)))
    google = _optional("google_crc32c")
    if google is not None:
        small, big = bytes(4096), bytes(1 << 20)

        def crc_small() -> None:
            for _ in range(100):
                google.value(small)

        out.append(("google-crc32c 4 KiB", _best(crc_small, 3) / 100, None))
        out.append(("google-crc32c 1 MiB", _best(lambda: google.value(big), 3), None))
    return out


def _measure(directory: str, quick: bool) -> list[Row]:
    rows: dict[str, Row] = {}
    for core in _backend.available():

        def record(
            op: str,
            unit: str,
            seconds: float,
            durable: bool,
            floor: float | None = None,
            core: str = core,
        ) -> None:
            row = rows.setdefault(op, Row(op, unit, {}, durable))
            row.per_core[core] = seconds
            if floor is not None:
                row.floor = (row.floor or {}) | {core: floor}

        with _backend.using(core), tempfile.TemporaryDirectory(dir=directory) as tmp:
            _measure_core(core, tmp, quick, record)
    return list(rows.values())


def _snapshot_table(directory: str) -> list[str]:
    """What snapshots cost: each cell a ratio of two things timed alternately in this run."""
    from . import bench_snapshots as bs

    cells: dict[str, dict[str, str]] = {}

    def put(what: str, core: str, text: str) -> None:
        cells.setdefault(what, {})[core] = text

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        big = bs.big_file(os.path.join(tmp, "big.mp"))
        for core in _backend.available():
            with _backend.using(core):
                r = bs.commit_under_readers(tmp, core)
                put("durable commit, 8 readers refreshing / none", core, f"{r.ratio:.2f}x")
                put("  means, less the writer's wait for a CPU", core, f"{r.ratio_on_cpu:.2f}x")
                put(
                    "  the writer's wait for a CPU per commit",
                    core,
                    f"{format_time(r.wait_with)} (none: {format_time(r.wait_without)})",
                )
                costs = bs.refresh_costs(tmp, big)
                put("refresh(), nothing new", core, format_time(costs.nothing_new))
                put(
                    "refresh() after a commit, 2^21-page file / fresh",
                    core,
                    f"{costs.ratio:.2f}x ({format_time(costs.after_commit_fresh)})",
                )
                full = bs.alloc_protected_full_vs_fresh(tmp, big)
                put(
                    "alloc_protected(), 2^20 protected / fresh",
                    core,
                    f"{full.ratio:.2f}x ({format_time(full.fresh)})",
                )
    return _cells(
        ("snapshots (ratios timed alternately in this run)", "C core", "pure core"), cells
    )


def _cells(header: tuple[str, str, str], cells: dict[str, dict[str, str]]) -> list[str]:
    table = [header] + [(w, c.get("c", "-"), c.get("python", "-")) for w, c in cells.items()]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    out = ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in table]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out


def _per_call(stmt: str, names: dict[str, object], number: int = 20000) -> float:
    """Best of 7 timeit runs, in seconds a call."""
    import timeit

    return min(timeit.repeat(stmt, globals=names, number=number, repeat=7)) / number


def _beside(stmt: str, base: str, names: dict[str, object], number: int = 20000) -> float:
    """``stmt``'s time over ``base``'s, each the best of 9 runs, the runs of the two taken in
    turn (a noisy machine then slows both alike)."""
    import timeit

    times: dict[str, list[float]] = {stmt: [], base: []}
    for _ in range(9):
        for s in times:
            times[s].append(timeit.timeit(s, globals=names, number=number))
    return min(times[stmt]) / min(times[base])


def _reads_table(directory: str) -> list[str]:
    """Views and handles against Python's own limit: a memoryview slice of an mmap, timed in
    turn with each of them."""
    mm = mmap.mmap(-1, 1 << 20)
    view = memoryview(mm)
    slice_ = "view[start : start + ps]"
    base = _per_call(slice_, {"view": view, "start": 8192, "ps": 4096})
    cells: dict[str, dict[str, str]] = {}
    from .handles import PageId

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for core in _backend.available():
            with _backend.using(core), Pager.create(os.path.join(tmp, core), 4096) as p:
                pid = p.alloc_bulk(100)[50]
                names = {"get": p.get_page, "pid": pid, "PageId": PageId, "n": int(pid)}
                names.update(view=view, start=8192, ps=4096)
                for what, stmt in (
                    ("get_page(handle)", "get(pid)"),
                    ("get_page(mp.PageId(n, ps))", "get(PageId(n, 4096))"),
                    ("mp.PageId(n, ps)", "PageId(n, 4096)"),
                ):
                    ratio = _beside(stmt, slice_, names)
                    cells.setdefault(what, {})[core] = f"{ratio:.2f}x ({format_time(ratio * base)})"
    view.release()
    mm.close()
    header = (f"reads / a memoryview slice of an mmap ({format_time(base)})", "C core", "pure core")
    return _cells(header, cells)


def file_cached(path: str) -> int:
    """Bytes of ``path`` in the page cache (mincore of a mapping of it)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    )
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        try:
            vec = ctypes.create_string_buffer((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE)
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
            return sum(b & 1 for b in vec.raw) * mmap.PAGESIZE
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def evict(path: str) -> None:
    """Drop the file's clean pages from the page cache (no privileges needed, unlike
    drop_caches, and nothing else's)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _open_table(directory: str) -> list[str]:
    """Opening a large sparse file whose pages are not in the page cache: the time, and how
    much of the file the open brought into the cache, against the size of one bitmap."""
    pages = 1 << 21
    cells: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = os.path.join(tmp, "big.mp")
        with (
            _backend.using("c" if "c" in _backend.available() else "python"),
            Pager.create(path, 1024, sync=False, preallocate=False) as p,
        ):
            p.alloc_bulk(pages - p.page_count)
        for core in _backend.available():
            with _backend.using(core):
                evict(path)
                start = time.perf_counter()
                with Pager.open(path, sync=False) as p:
                    seconds = time.perf_counter() - start
                    grown = file_cached(path)
            cells.setdefault("Pager.open, 2^21-page file, not cached", {})[core] = format_time(
                seconds
            )
            what = "  the file cached after it / one bitmap"
            cells.setdefault(what, {})[core] = f"{grown / (pages // 8):.1f}x"
    return _cells(("open (1 KiB pages, never written)", "C core", "pure core"), cells)


def format_time(seconds: float) -> str:
    """A time as the tables print it: ms, µs or ns, three figures."""
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.0f} ns"


def run(directory: str | None = None, quick: bool = True) -> str:
    """Measure and return the table as text."""
    directory = directory or tempfile.gettempdir()
    floor, write_floor = msync_floor(directory)
    rows = _measure(directory, quick)
    header = ("operation", "C core", "pure core", "pure / C", "C / floor", "C / msync")
    table = [header]
    for row in rows:
        c = row.per_core.get("c")
        py = row.per_core.get("python")
        ratio = f"{py / c:.1f}x" if c and py else "-"
        # the two-msync floor timed alongside the call where there is one, else the one above;
        # its half is one msync of one page, timed at the same moments as the call
        pair = (row.floor or {}).get("c", 2 * floor)
        of_pair = c / pair if row.durable and c else None
        table.append(
            (
                row.operation,
                format_time(c) if c else "-",
                format_time(py) if py else "-",
                ratio,
                "" if of_pair is None else f"{of_pair:.2f}",
                "" if of_pair is None else f"{2 * of_pair:.2f}x",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [
        f"floor on {directory}: msync of one 4 KiB page {format_time(floor)}, "
        f"pwrite+fdatasync of one page {format_time(write_floor)} (medians)",
        "floor of a durable call: two msyncs of one page each (a commit's two barriers), timed",
        "alternately with the call; below 1, the call took one barrier. alloc_bulk: 2 x the above",
        "C / msync: the same against one msync of one page (half that floor, timed alongside)",
        "",
        *(
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in table
        ),
    ]
    lines.insert(6, "  ".join("-" * w for w in widths))
    lines += ["", *_reads_table(directory)]
    lines += ["", *_open_table(directory)]
    lines += ["", *cow_table(directory, 60 if quick else 200)]
    lines += ["", *_snapshot_table(directory)]
    peers = _peers(directory)
    if peers:
        lines += ["", "peers (same run):"]
        for name, seconds, peer_floor in peers:
            multiple = f"  ({seconds / peer_floor:.2f} x floor)" if peer_floor else ""
            lines.append(f"  {name:<32} {format_time(seconds)}{multiple}")
    return "\n".join(lines)
