"""ConcurrentPager: one Pager shared by threads, many readers or one writer at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from .errors import Unavailable, WouldBlock
from .handles import PageId, ProtectedPageId
from .pager import Pager
from .reader import AllocatedPageIter, AllocatedProtectedPageIter
from .rwlock import RWLock

__all__ = ["ConcurrentPager", "PagerReader"]


class PagerReader:
    """What a reader may do with the shared pager: look, never change. Valid inside its block."""

    __slots__ = ("_pager",)

    def __init__(self, pager: Pager) -> None:
        self._pager: Pager | None = pager

    def _live(self) -> Pager:
        if self._pager is None:
            raise Unavailable("this read guard ended with its with-block")
        return self._pager

    @property
    def page_size(self) -> int:
        return self._live().page_size

    @property
    def page_count(self) -> int:
        return self._live().page_count

    @property
    def free_page_count(self) -> int:
        return self._live().free_page_count

    @property
    def path(self) -> str:
        return self._live().path

    def get_page(self, pid: PageId) -> memoryview:
        return self._live().get_page(pid)

    def get_protected_page(self, ppid: ProtectedPageId) -> memoryview:
        return self._live().get_protected_page(ppid)

    def iter_allocated_pages(self) -> AllocatedPageIter:
        return self._live().iter_allocated_pages()

    def iter_allocated_protected_pages(self) -> AllocatedProtectedPageIter:
        return self._live().iter_allocated_protected_pages()

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"a read guard offers only read operations, not {name!r}")

    def __repr__(self) -> str:
        return f"<PagerReader of {self._pager!r}>"


class ConcurrentPager:
    """``ConcurrentPager(pager)``: ``read()`` shared, ``write()`` exclusive, ``try_*`` too.

    ``try_read()`` and ``try_write()`` raise ``WouldBlock`` on entering their block when the
    lock is not free at once. ``into_inner()`` waits for the holders, then hands the pager back.
    """

    __slots__ = ("_lock", "_pager")

    def __init__(self, pager: Pager) -> None:
        if not isinstance(pager, Pager):
            raise TypeError(f"ConcurrentPager needs a Pager, not {type(pager).__name__}")
        self._pager: Pager | None = pager
        self._lock = RWLock()

    def _inner(self) -> Pager:
        if self._pager is None:
            raise Unavailable("into_inner() took the pager back")
        return self._pager

    @contextmanager
    def _reading(self, blocking: bool) -> Iterator[PagerReader]:
        pager = self._inner()
        if not self._lock.acquire_read(blocking):
            raise WouldBlock("a writer holds or waits for the pager")
        guard = PagerReader(pager)
        try:
            if self._pager is None:
                raise Unavailable("into_inner() took the pager back")
            yield guard
        finally:
            guard._pager = None
            self._lock.release_read()

    @contextmanager
    def _writing(self, blocking: bool) -> Iterator[Pager]:
        pager = self._inner()
        if not self._lock.acquire_write(blocking):
            raise WouldBlock("the pager is in use")
        try:
            if self._pager is None:
                raise Unavailable("into_inner() took the pager back")
            yield pager
        finally:
            self._lock.release_write()

    def read(self) -> AbstractContextManager[PagerReader]:
        """Shared access: many threads at once; the guard offers only read operations."""
        return self._reading(True)

    def write(self) -> AbstractContextManager[Pager]:
        """Exclusive access to the Pager itself."""
        return self._writing(True)

    def try_read(self) -> AbstractContextManager[PagerReader]:
        return self._reading(False)

    def try_write(self) -> AbstractContextManager[Pager]:
        return self._writing(False)

    def into_inner(self) -> Pager:
        """Wait for every holder to leave, then give the pager back; this object is done."""
        pager = self._inner()
        self._lock.acquire_write()
        try:
            self._pager = None
        finally:
            self._lock.release_write()
        return pager

    def __repr__(self) -> str:
        state = "released" if self._pager is None else repr(self._pager)
        return f"<ConcurrentPager {state} {self._lock!r}>"
