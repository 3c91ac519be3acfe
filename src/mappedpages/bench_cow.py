"""The step every copy-on-write structure takes, durably, here and in the peers users would pick
instead: 16 new 4 KiB pages written, a root switched to them, the 16 pages they replace freed,
all in one transaction. Each time is a median, with one ``msync`` of one dirty page (the floor)
timed alternately with it, so that each ratio comes from one run; the contenders run in turn,
and are compared by their multiples of the floor, which the disk's drift between them leaves
alone.

- mappedpages: ``alloc_bulk(16)``, the pages written with ``write_page`` and ``flush``ed (so
  that the batch's record vouches for them: one barrier), the root a protected page
  rewritten, ``free_bulk`` of the old ones, in one ``batch()``; and the same with the pages
  written through their views (two barriers);
- LMDB (``sync=True``): one write transaction putting 16 values and the root, deleting 16;
- SQLite (WAL, ``synchronous=FULL``): one transaction inserting 16 rows, updating the root row
  and deleting 16 rows.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from . import _backend
from .pager import Pager

NODES = 16
PAGE = 4096


def _timed(
    step: Callable[[], object], floor: Callable[[], object], rounds: int
) -> tuple[float, float]:
    """Median seconds of ``step`` and of ``floor``, each call of one followed by the other."""
    steps, floors = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        mid = time.perf_counter()
        floor()
        steps.append(mid - start)
        floors.append(time.perf_counter() - mid)
    return statistics.median(steps), statistics.median(floors)


@contextmanager
def mappedpages_step(tmp: str, views: bool = False) -> Iterator[Callable[[], None]]:
    """``views``: the pages written through their views (flushed in the first barrier)
    instead of with ``write_page`` (sealed: one barrier)."""
    with Pager.create(os.path.join(tmp, "cow.mp"), PAGE, sync=True) as p:
        root = p.alloc_protected()
        nodes = p.alloc_bulk(NODES)
        content = bytes(range(256)) * (PAGE // 256)

        def step() -> None:
            nonlocal nodes
            with p.batch():
                new = p.alloc_bulk(NODES)
                for pid in new:
                    if views:
                        p.get_page_mut(pid)[:] = content
                    else:
                        p.write_page(pid, content)
                p.flush(new)
                with root.get_mut(p) as w:
                    w.page_mut()[:8] = int(new[0]).to_bytes(8, "little")
                p.free_bulk(nodes)
            nodes = new

        yield step


@contextmanager
def lmdb_step(tmp: str, lmdb: Any) -> Iterator[Callable[[], None]]:
    env = lmdb.open(tmp, map_size=1 << 30, sync=True, metasync=True)
    content = bytes(range(256)) * (PAGE // 256)
    serial = 0

    def step() -> None:
        nonlocal serial
        with env.begin(write=True) as txn:
            for i in range(NODES):
                txn.put(b"%d" % (serial + i), content)
            txn.put(b"root", b"%d" % serial)
            if serial:
                for i in range(NODES):
                    txn.delete(b"%d" % (serial - NODES + i))
        serial += NODES

    try:
        yield step
    finally:
        env.close()


@contextmanager
def sqlite_step(tmp: str) -> Iterator[Callable[[], None]]:
    db = sqlite3.connect(os.path.join(tmp, "cow.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE node (k INTEGER PRIMARY KEY, v BLOB)")
    db.execute("CREATE TABLE root (k INTEGER PRIMARY KEY, v INTEGER)")
    content = bytes(range(256)) * (PAGE // 256)
    serial = 0

    def step() -> None:
        nonlocal serial
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO node VALUES (?, ?)", [(serial + i, content) for i in range(NODES)]
        )
        db.execute("INSERT OR REPLACE INTO root VALUES (0, ?)", (serial,))
        db.execute("DELETE FROM node WHERE k < ?", (serial,))
        db.execute("COMMIT")
        serial += NODES

    try:
        yield step
    finally:
        db.close()


def cow_table(directory: str, rounds: int = 60) -> list[str]:
    """The table's lines: each contender's median step, its multiple of the floor, and how
    many times the C core's step fits in it."""
    from .bench import Floor, format_time

    results: dict[str, tuple[float, float]] = {}
    Step = Callable[[str], AbstractContextManager[Callable[[], None]]]
    contenders: list[tuple[str, str | None, Step]] = []
    for which in _backend.available():
        contenders.append((f"mappedpages, {which} core", which, mappedpages_step))
        contenders.append(
            (f"mappedpages, {which}, views", which, lambda tmp: mappedpages_step(tmp, views=True))
        )
    try:
        lmdb = importlib.import_module("lmdb")
        contenders.append(("LMDB, sync=True", None, lambda tmp: lmdb_step(tmp, lmdb)))
    except ImportError:
        pass
    contenders.append(("SQLite, WAL, synchronous=FULL", None, sqlite_step))
    for name, core, make in contenders:
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            floor = Floor(tmp)
            try:
                with _backend.using(core) if core else nullcontext(), make(tmp) as step:
                    step()  # the first step grows the files: not timed
                    results[name] = _timed(step, floor.msync, rounds)
            finally:
                floor.close()
    c = results.get("mappedpages, c core")
    lines = [
        "durable copy-on-write step (16 new 4 KiB pages written and synced, a root switched,",
        "16 pages freed; one transaction), floor = one msync of one page timed alternately;",
        "C core faster: the peer's multiple of its floor against the C core's of its own",
    ]
    for name, (seconds, floor_s) in results.items():
        versus = ""
        if c and not name.startswith("mappedpages"):
            # each contender runs in turn, so the disk may have drifted between them: the
            # multiples of the floor timed alongside each are what compares
            ratio = (seconds / floor_s) / (c[0] / c[1])
            versus = (
                f"  C core {ratio:.2f}x faster"
                if ratio >= 1
                else f"  C core {1 / ratio:.2f}x slower"
            )
        lines.append(
            f"  {name:<30} {format_time(seconds):>10}  {seconds / floor_s:.2f} x floor{versus}"
        )
    return lines
