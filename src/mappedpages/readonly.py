"""ReadOnlyPager: a read-only view of a file, for any number of processes at once.

It takes no lock, so it works while a writer has the file open. It sees the allocation state
and the protected-page directory as committed when it was opened (the metadata it reads is
never overwritten in place, so that state stays coherent); the bytes of regular pages are the
live page cache, as a writer's views are.
"""

from __future__ import annotations

import os

from ._files import open_shared
from .handles import check_page_size
from .reader import PageReader, StrPath

__all__ = ["ReadOnlyPager"]


class ReadOnlyPager(PageReader):
    """A read-only mapping of a mappedpages file: ``ReadOnlyPager.open(path)``.

    It has no mutating methods; its views are read-only memoryviews (writing raises
    ``TypeError``). ``PageId.get`` and ``ProtectedPageId.get`` work with it.
    """

    __slots__ = ()

    @classmethod
    def open(cls, path: StrPath, page_size: int | None = None) -> ReadOnlyPager:
        """Open an existing file; ``page_size`` None takes it from the file."""
        wanted = 0 if page_size is None else check_page_size(page_size)
        spath = os.fspath(path)
        fd = open_shared(spath)
        return cls._attach(fd, spath, wanted, False, False, False)
