"""mappedpages: crash-consistent, memory-mapped, file-backed fixed-size pages.

The public API is described in the README; everything listed in ``__all__`` is stable.
"""

from __future__ import annotations

from . import _backend
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
    PageSizeMismatch,
    ReservedPage,
    Unavailable,
    WouldBlock,
)
from .handles import MappedPage, PageId, ProtectedPageId
from .pager import Pager, ProtectedPages
from .protected import AllocatedProtectedPageIter, ProtectedPageWriter
from .protocols import BulkPageAllocator, PageAllocator, PageHandle
from .reader import AllocatedPageIter
from .readonly import ReadOnlyPager
from .subpages import SubPageAllocator, SubPageId

__version__ = "0.1.0"

core: str = _backend.CORE.NAME
"""``"c"`` when the cffi C core is in use, ``"python"`` for the pure-Python core."""


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
    "PageSizeMismatch",
    "Pager",
    "PagerReader",
    "ProtectedPageId",
    "ProtectedPageWriter",
    "ProtectedPages",
    "ReadOnlyPager",
    "ReservedPage",
    "SubPageAllocator",
    "SubPageId",
    "Unavailable",
    "WouldBlock",
    "core",
    "crc32c",
]
