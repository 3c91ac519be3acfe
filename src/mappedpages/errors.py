"""The exception hierarchy of mappedpages (see API.md, "Errors")."""

from __future__ import annotations

__all__ = [
    "CorruptDirectoryIndex",
    "CorruptMetadata",
    "CorruptProtectedDirectory",
    "CorruptSuperblock",
    "DirectoryFull",
    "DoubleFree",
    "FileLocked",
    "InvalidPageSize",
    "MappedPageError",
    "OutOfBounds",
    "PageSizeMismatch",
    "ReservedPage",
    "Unavailable",
    "WouldBlock",
]


class MappedPageError(Exception):
    """Base of every error raised by mappedpages itself."""


class InvalidPageSize(MappedPageError, ValueError):
    """Page size not a power of two, too small or large, or not the file's own."""


class PageSizeMismatch(MappedPageError, TypeError):
    """A handle of one page size was given to a pager or allocator of another."""


class CorruptSuperblock(MappedPageError):
    """Bad magic, incompatible version, file too small, or not a mappedpages file."""


class CorruptMetadata(MappedPageError):
    """Neither metadata copy is valid, or the committed state breaks an invariant."""


class CorruptDirectoryIndex(MappedPageError):
    """The protected-page directory index is unreadable."""


class CorruptProtectedDirectory(MappedPageError):
    """Both copies of a protected-page directory block are invalid."""


class OutOfBounds(MappedPageError, IndexError):
    """A page id beyond the file, or a protected/sub id that is not allocated."""


class ReservedPage(MappedPageError, ValueError):
    """An internal page (0, 1, 2, a bitmap copy, a directory page) used as a data page."""


class DoubleFree(MappedPageError):
    """Freeing what is already free (also a duplicate inside one bulk call)."""


class DirectoryFull(MappedPageError):
    """No room for another protected-page directory block."""


class Unavailable(MappedPageError):
    """The pager is closed or unusable (after close, a failed commit, or in a forked child)."""


class WouldBlock(MappedPageError):
    """try_read()/try_write() could not take the lock at once."""


class FileLocked(MappedPageError, BlockingIOError):
    """Another Pager holds the file open for writing."""
