"""Hot backup: a copy of one commit into a new file, taken while the writer goes on.

The copy is made from a snapshot, and a snapshot keeps every page its commit uses whole for as
long as it lives (docs/DESIGN.md, "Snapshots"), so the copy needs no lock against the writer
and the writer never waits for it. The new file holds:

- page 0 as it is (it is written once, when the file is created);
- the snapshot's commit record in the slot it was read from, taken from the copy the snapshot
  made when it read it (the writer rewrites that slot two commits later); the other slot is
  left zero, so the copy holds exactly that one commit;
- every page in use in that commit, internal and data pages, from the mapping;
- nothing for free pages: the file is extended to its length first, so they stay holes and
  the copy takes the disk space of the pages in use only.

It is written under a temporary name, synced and then linked under its name (_files.publish),
so a copy cut short, even by SIGKILL, leaves no file under the name. Data pages are copied as
the mapping holds them: writes the writer makes in place through its views while the copy runs
are not isolated (the snapshot rules say the same of every reader).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from . import format as fmt
from ._backend import CORE
from ._core_api import FREE
from ._files import publish

__all__ = ["Progress", "copy_snapshot"]

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_copied, bytes_to_copy)`` after each chunk of the copy."""

_CHUNK = 8 << 20  # bytes per write: large enough for the disk, small enough for a progress bar
_KINDS_CHUNK = 1 << 16  # pages whose kinds one call into the core returns


# runs of pages in use in a chunk of kinds, one byte a page: found at C speed by re, so that a
# terabyte file costs a Python step per run, not per page
_IN_USE = re.compile(b"[^%c]+" % FREE)


def _used_runs(core: Any, skip: frozenset[int]) -> list[tuple[int, int]]:
    """Runs ``(first, count)`` of the pages in use in the snapshot, without ``skip``. The kinds
    come a chunk per call: a call per page would wait for the GIL once per page while other
    threads run."""
    bounds: list[list[int]] = []  # [first, end) each
    count = core.page_count
    for base in range(0, count, _KINDS_CHUNK):
        for run in _IN_USE.finditer(core.kinds(base, min(_KINDS_CHUNK, count - base))):
            first, end = base + run.start(), base + run.end()
            if bounds and bounds[-1][1] == first:  # a run across two chunks
                bounds[-1][1] = end
            else:
                bounds.append([first, end])
    runs: list[tuple[int, int]] = []
    cuts = sorted(skip)
    for first, end in bounds:
        for page in cuts:
            if first <= page < end:
                if page > first:
                    runs.append((first, page - first))
                first = page + 1
        if end > first:
            runs.append((first, end - first))
    return runs


def _record_pages(page0: bytes, page_size: int) -> tuple[int, int]:
    """Where page 0 puts the two commit records (pages 1 and 2, or an upgraded file's)."""
    ident, _ = fmt.unpack_identity(page0)
    if ident.version == fmt.FORMAT_VERSION:
        return ident.record_0, ident.record_1
    up = fmt.upgrade_pointer(page0, page_size, CORE.crc32c)
    assert up is not None  # the snapshot opened, so page 0 was read as a format-2 file's
    return up.record_0, up.record_1


def copy_snapshot(core: Any, dest: str, progress: Progress | None = None) -> None:
    """Write the commit that the snapshot core ``core`` shows into the new file ``dest``."""
    ps = core.page_size
    count = core.page_count
    view = core.mapping()
    record = core.record_block()
    skip: frozenset[int] = frozenset()
    if record is not None:
        records = _record_pages(bytes(view[:ps]), ps)
        skip = frozenset(records)
        own = records[core.record_slot]
    runs = _used_runs(core, skip)
    total = sum(n for _, n in runs) * ps + (len(record) if record is not None else 0)

    def fill(fd: int) -> None:
        os.ftruncate(fd, count * ps)  # free pages stay holes
        done = 0
        for first, n in runs:
            at, end = first * ps, (first + n) * ps
            while at < end:
                chunk = view[at : min(end, at + _CHUNK)]
                written = os.pwrite(fd, chunk, at)
                at += written
                done += written
                if progress is not None:
                    progress(done, total)
        if record is not None:
            block = memoryview(record)
            while block:
                block = block[os.pwrite(fd, block, own * ps + len(record) - len(block)) :]
            done += len(record)
            if progress is not None:
                progress(done, total)

    os.close(publish(dest, fill, lock=False))
