"""The pure-Python core: the same interface and file format as the C core, with the stdlib.

It is written as the C core is, module for source file: ``state`` (csrc/core.h), ``tree``
(tree.c), ``log`` (log.c), ``alloc`` (alloc.c), ``directory`` (directory.c), ``pending``
(pending.c), ``checkpoint`` (checkpoint.c), ``commit`` (commit.c), ``open`` (open.c),
``snapshot`` (snapshot.c), and ``core``, whose methods are the public functions of
csrc/mappedpages.h. See _core_api.py for the interface and docs/FORMAT.md for every byte.
"""

from __future__ import annotations

import threading

from .._v1 import V1State
from ..format import Version1
from .core import PyCore
from .crc import crc32c
from .snapshot import Snapshot
from .snapshot import newest_generation as _newest_generation
from .snapshot import open_file as _open_snapshot

NAME = "python"

__all__ = ["NAME", "PyCore", "Snapshot", "Version1", "crc32c", "fence", "open_core", "upgrade_core"]


def open_core(fd: int, page_size: int, *, writable: bool, sync: bool, preallocate: bool) -> PyCore:
    return PyCore(fd, page_size, writable, sync, preallocate)


def upgrade_core(fd: int, v1: V1State, *, sync: bool, preallocate: bool) -> PyCore:
    """Upgrade the format-1 file behind ``fd`` (its state read as ``v1``) and open it."""
    return PyCore(fd, v1.page_size, True, sync, preallocate, v1)


def open_snapshot(fd: int, page_size: int) -> Snapshot:
    return _open_snapshot(fd, page_size)


def newest_generation(fd: int, page_size: int) -> int:
    return _newest_generation(fd, page_size)


_fence_lock = threading.Lock()


def fence() -> None:
    """A full memory fence, as CPython offers none: two uncontended lock round trips. Each
    takes and gives the lock with atomic read-modify-write instructions; on x86-64 any such
    instruction is a full fence, and on arm64 the release of the first round trip is ordered
    before the acquire of the second, so a store before the call is visible before a load
    after it."""
    for _ in range(2):
        _fence_lock.acquire()
        _fence_lock.release()
