"""``mappedpages bench``: a quick table of the C core against the pure-Python core.

Each operation is timed on both cores in this process, on a temporary file in the given
directory (default: the system's temporary directory, so pick a directory on the file system
you care about). Durable operations are also shown as a multiple of the floor: one
``msync(MS_SYNC)`` of one dirty page on the same file system.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from . import _backend
from .pager import Pager


@dataclass
class Row:
    operation: str
    unit: str
    per_core: dict[str, float]  # seconds per unit, by core name
    durable: bool = False


def _best(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` calls (the least disturbed by other work)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def msync_floor(directory: str, rounds: int = 50) -> float:
    """Seconds for one msync(MS_SYNC) of one dirtied 4 KiB page."""
    fd, path = tempfile.mkstemp(dir=directory)
    try:
        os.ftruncate(fd, 1 << 20)
        with mmap.mmap(fd, 1 << 20) as m:
            m[:] = bytes(1 << 20)
            m.flush()

            def one() -> None:
                m[100] = (m[100] + 1) & 0xFF
                m.flush(0, mmap.PAGESIZE)

            return _best(one, rounds)
    finally:
        os.close(fd)
        os.unlink(path)


Record = Callable[[str, str, float, bool], None]


def _measure_core(core: str, tmp: str, quick: bool, record: Record) -> None:
    """Time every operation on the active core, calling ``record(op, unit, seconds, durable)``."""
    n = 2000 if quick else 20000
    crc = _backend.CORE.crc32c
    path = os.path.join(tmp, "bench.mp")
    with Pager.create(path, 4096, sync=True) as p:
        p.alloc_bulk(100)
        pairs = 50 if core == "c" else 20

        def durable() -> None:
            for _ in range(pairs):
                p.free(p.alloc())

        record("durable alloc()", "call", _best(durable, 3) / (2 * pairs), True)
        with p.batch():
            alloc, free = p.alloc, p.free

            def batched() -> None:
                for _ in range(n):
                    free(alloc())

            record("alloc()+free() in batch()", "call", _best(batched, 3) / (2 * n), False)
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
        bulk = 10_000

        def bulk_pair() -> None:
            p.free_bulk(p.alloc_bulk(bulk))

        record("alloc_bulk+free_bulk(10000)", "page", _best(bulk_pair, 3) / bulk, False)
    small, big = bytes(4096), bytes(1 << 20)

    def crc_small() -> None:
        for _ in range(100):
            crc(small)

    record("crc32c 4 KiB", "4 KiB", _best(crc_small, 3) / 100, False)
    record("crc32c 1 MiB", "1 MiB", _best(lambda: crc(big), 3 if core == "c" else 1), False)


def _measure(directory: str, quick: bool) -> list[Row]:
    rows: dict[str, Row] = {}
    for core in _backend.available():

        def record(op: str, unit: str, seconds: float, durable: bool, core: str = core) -> None:
            rows.setdefault(op, Row(op, unit, {}, durable)).per_core[core] = seconds

        with _backend.using(core), tempfile.TemporaryDirectory(dir=directory) as tmp:
            _measure_core(core, tmp, quick, record)
    return list(rows.values())


def _fmt(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e9:.0f} ns"


def run(directory: str | None = None, quick: bool = True) -> str:
    """Measure and return the table as text."""
    directory = directory or tempfile.gettempdir()
    floor = msync_floor(directory)
    rows = _measure(directory, quick)
    header = ("operation", "C core", "pure core", "pure / C", "x msync floor (C)")
    table = [header]
    for row in rows:
        c = row.per_core.get("c")
        py = row.per_core.get("python")
        ratio = f"{py / c:.1f}x" if c and py else "-"
        multiple = f"{c / floor:.2f}" if row.durable and c else ""
        table.append(
            (row.operation, _fmt(c) if c else "-", _fmt(py) if py else "-", ratio, multiple)
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [
        f"msync floor (one 4 KiB page, {directory}): {_fmt(floor)}",
        "",
        *("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table),
    ]
    lines.insert(3, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
