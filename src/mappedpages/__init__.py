"""mappedpages: crash-consistent, memory-mapped, file-backed fixed-size pages.

docs/API.md describes every public name; everything listed in ``__all__`` is stable.
"""

from __future__ import annotations

import os

from . import _backend
from ._readertable import ReaderInfo, ReaderTable
from .concurrent_pager import ConcurrentPager, PagerReader
from .errors import (
    CorruptDirectoryIndex,
    CorruptMetadata,
    CorruptProtectedDirectory,
    CorruptSuperblock,
    DirectoryFull,
    DoubleFree,
    FileLocked,
    InvalidPageSize,
    MappedPageError,
    OutOfBounds,
    PageInUse,
    PageSizeMismatch,
    RecoveryWarning,
    ReservedPage,
    Unavailable,
    WouldBlock,
    WriteConflict,
)
from .handles import MappedPage, PageId, ProtectedPageId
from .pager import Pager, ProtectedPages
from .protected import ProtectedPageWriter
from .protocols import BulkPageAllocator, PageAllocator, PageHandle
from .reader import AllocatedPageIter, AllocatedProtectedPageIter
from .readonly import ReadOnlyPager
from .snapshot import Snapshot
from .subpages import SubPageAllocator, SubPageId

__version__ = "0.1.0"
"""The version of this package (pyproject.toml reads it from here, for the package metadata)."""

core: str = _backend.CORE.NAME
"""``"c"`` when the cffi C core is in use, ``"python"`` for the pure-Python core."""


def readers(path: str | os.PathLike[str]) -> list[ReaderInfo]:
    """The live snapshots of other processes registered for the file at ``path``: each
    ``ReaderInfo`` has ``pid``, ``generation`` and ``since`` (``time.time()`` when it was taken
    or last refreshed). Snapshots of a process that died are not listed."""
    table = ReaderTable.open_to_list(os.fspath(path))
    if table is None:
        return []
    try:
        return table.live()
    finally:
        table.close()


crc32c = _backend.CORE.crc32c
"""CRC32C (Castagnoli) of any bytes-like object, continuing from ``crc``:
``crc32c(b, crc32c(a)) == crc32c(a + b)``. Zero-copy; the C core releases the GIL for
inputs of 64 KiB and more."""


__all__ = [
    "AllocatedPageIter",
    "AllocatedProtectedPageIter",
    "BulkPageAllocator",
    "ConcurrentPager",
    "CorruptDirectoryIndex",
    "CorruptMetadata",
    "CorruptProtectedDirectory",
    "CorruptSuperblock",
    "DirectoryFull",
    "DoubleFree",
    "FileLocked",
    "InvalidPageSize",
    "MappedPage",
    "MappedPageError",
    "OutOfBounds",
    "PageAllocator",
    "PageHandle",
    "PageId",
    "PageInUse",
    "PageSizeMismatch",
    "Pager",
    "PagerReader",
    "ProtectedPageId",
    "ProtectedPageWriter",
    "ProtectedPages",
    "ReadOnlyPager",
    "ReaderInfo",
    "RecoveryWarning",
    "ReservedPage",
    "Snapshot",
    "SubPageAllocator",
    "SubPageId",
    "Unavailable",
    "WouldBlock",
    "WriteConflict",
    "core",
    "crc32c",
    "readers",
]
