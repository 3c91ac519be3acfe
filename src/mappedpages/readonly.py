"""ReadOnlyPager: a read-only view of a file, for any number of processes at once.

It takes no lock, so it works while a writer has the file open. It sees the allocation state
and the protected-page directory as committed when it was opened, or when ``refresh`` last
took up what was committed since; the bytes of regular pages are the live page cache, as a
writer's views are.
"""

from __future__ import annotations

import os

from ._files import open_shared
from ._snapshot import Snapshot, load, mark
from .handles import check_page_size
from .reader import PageReader, StrPath

__all__ = ["ReadOnlyPager"]


class ReadOnlyPager(PageReader):
    """A read-only mapping of a mappedpages file: ``ReadOnlyPager.open(path)``.

    It has no mutating methods; its views are read-only memoryviews (writing raises
    ``TypeError``). ``PageId.get`` and ``ProtectedPageId.get`` work with it.
    """

    __slots__ = ("_seen",)

    _seen: bytes  # the commit records as they were when the state in use was loaded

    @classmethod
    def open(cls, path: StrPath, page_size: int | None = None) -> ReadOnlyPager:
        """Open an existing file; ``page_size`` None takes it from the file."""
        wanted = 0 if page_size is None else check_page_size(page_size)
        spath = os.fspath(path)
        fd = open_shared(spath)
        return cls._attach(fd, spath, wanted, False, False, False)

    def _adopt(self, snapshot: Snapshot) -> None:
        super()._adopt(snapshot)
        self._seen = snapshot.mark

    def refresh(self) -> bool:
        """Take up what was committed since this reader opened the file (or last refreshed):
        the allocation state, the page count and the protected-page directory.

        Returns whether anything was committed since. Views taken before stay readable;
        after a change, iterators started before raise ``RuntimeError``, as after any change
        of state. On failure (say, the file was damaged meanwhile) the reader keeps the state
        it had.
        """
        self._check_live()
        if mark(self._fd) == self._seen:  # no commit since: nothing to load
            return False
        snapshot = load(
            self._fd, self._ps, self._backend, writable=False, sync=False, prealloc=False
        )
        old = self._core
        if snapshot.core.generation == old.generation:
            snapshot.core.close()
            self._seen = snapshot.mark
            return False
        self._adopt(snapshot)
        self._version += 1
        old.close()
        return True
