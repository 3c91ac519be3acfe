"""The exception hierarchy of mappedpages (see docs/API.md, "Errors")."""

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
    "RecoveryWarning",
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
    """No commit record is valid, or the state it names is damaged or breaks an invariant."""


class CorruptDirectoryIndex(MappedPageError):
    """The protected-page directory is unreadable (format 1's directory index)."""


class CorruptProtectedDirectory(MappedPageError):
    """A block or an entry of the protected-page directory is damaged, or a protected page's
    content does not match its checksum."""


class OutOfBounds(MappedPageError, IndexError):
    """A page id beyond the file, or a protected/sub id that is not allocated."""


class ReservedPage(MappedPageError, ValueError):
    """An internal page (0, 1, 2, a tree block, a protected page's content) used as a data
    page."""


class DoubleFree(MappedPageError):
    """Freeing what is already free (also a duplicate inside one bulk call)."""


class WriteConflict(MappedPageError):
    """A protected page's writer commits after another writer of the same page committed
    since it was made: committing would silently undo that write."""


class PageInUse(MappedPageError, ValueError):
    """Freeing through the pager a page that a structure built on it still uses (the parent
    page of a ``SubPageAllocator``'s sub-pages): free it through that structure."""


class DirectoryFull(MappedPageError):
    """No room for another protected page (format 2 has room for as many as the file has
    pages; kept for code written against format 1)."""


class Unavailable(MappedPageError):
    """The pager is closed or unusable (after close, a failed commit, or in a forked child)."""


class WouldBlock(MappedPageError):
    """try_read()/try_write() could not take the lock at once."""


class FileLocked(MappedPageError, BlockingIOError):
    """Another Pager holds the file open for writing."""


class RecoveryWarning(UserWarning):
    """``Pager.open`` found the newest commit's state damaged and opened the commit before it
    (``mappedpages check`` tells what is damaged)."""
