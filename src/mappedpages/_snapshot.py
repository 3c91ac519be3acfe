"""Loading a coherent committed state while a writer may be committing (for ReadOnlyPager).

A reader takes no lock, so a writer may commit while it loads. The copies a commit of
generation ``G`` uses are overwritten no sooner than commit ``G + 2``, and that one starts only
after commit ``G + 1`` has written its commit record. So a load during which no commit record
changed read only copies of the state it chose; a load during which one did may have read a
copy half overwritten (validation then usually fails, but a stale older copy can pass) and is
done again. A load that fails while the records stay as they were is a damaged file: its error
is raised at once.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

from ._core_api import Core, CoreModule
from .errors import Unavailable
from .format import RECORD_OFFSET, RECORD_SIZE
from .protected import Directory

# Bytes that every commit changes: both commit-record slots (with 1 KiB pages, the one record
# and the start of metadata copy 0, which every such commit may rewrite as well).
_MARK = (RECORD_OFFSET, 2 * RECORD_SIZE)
ATTEMPTS = 50
FIRST_WAIT = 0.00005  # seconds between attempts, doubling up to
_LONGEST_WAIT = 0.01


def mark(fd: int) -> bytes:
    """Bytes that change whenever a commit completes (compare before and after a read)."""
    offset, size = _MARK
    return os.pread(fd, size, offset)


def pause(wait: float) -> float:
    """Wait before the next attempt; returns how long to wait the time after."""
    time.sleep(wait)
    return min(2 * wait, _LONGEST_WAIT)


class Snapshot(NamedTuple):
    core: Core
    directory: Directory
    mark: bytes  # the commit records as they were throughout the load (b"" for a writer)


def load(
    fd: int, page_size: int, module: CoreModule, *, writable: bool, sync: bool, prealloc: bool
) -> Snapshot:
    """Open a core on ``fd`` and load the protected-page directory, both of one commit."""
    if writable:  # the writer lock: nobody else commits
        return Snapshot(*_load_once(fd, page_size, module, True, sync, prealloc), b"")
    wait = FIRST_WAIT
    for _ in range(ATTEMPTS):
        before = mark(fd)
        try:
            core, directory = _load_once(fd, page_size, module, False, False, False)
        except Exception:
            if mark(fd) == before:
                raise  # no commit meanwhile: this is what the file holds
        else:
            if mark(fd) == before:
                return Snapshot(core, directory, before)
            core.close()
        wait = pause(wait)
    raise Unavailable(
        f"a writer committed during each of {ATTEMPTS} attempts to load a coherent state; "
        "try again when it pauses"
    )


def _load_once(
    fd: int, page_size: int, module: CoreModule, writable: bool, sync: bool, prealloc: bool
) -> tuple[Core, Directory]:
    core = module.open_core(fd, page_size, writable=writable, sync=sync, preallocate=prealloc)
    try:
        return core, Directory.load(core.mapping(), core, module.crc32c)
    except BaseException:
        core.close()
        raise
