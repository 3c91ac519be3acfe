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
    """What a reader may do with the shared pager: look, never change (``cp.read()``).

    Valid inside its with-block only: afterwards every call raises ``Unavailable``. Any other
    attribute raises ``AttributeError``.
    """

    __slots__ = ("_pager",)

    def __init__(self, pager: Pager) -> None:
        self._pager: Pager | None = pager

    def _live(self) -> Pager:
        if self._pager is None:
            raise Unavailable("this read guard ended with its with-block")
        return self._pager

    # Each raises Unavailable once the with-block has ended, else it is the Pager's own.

    @property
    def page_size(self) -> int:
        """The pager's ``page_size``."""
        return self._live().page_size

    @property
    def page_count(self) -> int:
        """The pager's ``page_count`` (reserved pages 0-2 included)."""
        return self._live().page_count

    @property
    def free_page_count(self) -> int:
        """The pager's ``free_page_count``."""
        return self._live().free_page_count

    @property
    def path(self) -> str:
        """The pager's ``path``."""
        return self._live().path

    def get_page(self, pid: PageId) -> memoryview:
        """``pager.get_page(pid)``: a read-only view, with the Pager's exceptions."""
        return self._live().get_page(pid)

    def get_protected_page(self, ppid: ProtectedPageId) -> memoryview:
        """``pager.get_protected_page(ppid)``: a read-only view of the committed content."""
        return self._live().get_protected_page(ppid)

    def iter_allocated_pages(self) -> AllocatedPageIter:
        """``pager.iter_allocated_pages()``: ascending ``PageId``s of the data pages in use."""
        return self._live().iter_allocated_pages()

    def iter_allocated_protected_pages(self) -> AllocatedProtectedPageIter:
        """``pager.iter_allocated_protected_pages()``: ascending ``ProtectedPageId``s."""
        return self._live().iter_allocated_protected_pages()

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"a read guard offers only read operations, not {name!r}")

    def __repr__(self) -> str:
        return f"<PagerReader of {self._pager!r}>"


class ConcurrentPager:
    """``ConcurrentPager(pager)``: ``read()`` shared, ``write()`` exclusive, ``try_*`` too.

    ``TypeError`` unless ``pager`` is a ``Pager``.

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
        """Shared access: ``with cp.read() as p``, many threads at once, waiting while a
        writer holds or waits for the lock; ``p`` (a ``PagerReader``) offers only read
        operations. ``Unavailable`` after ``into_inner()``."""
        return self._reading(True)

    def write(self) -> AbstractContextManager[Pager]:
        """Exclusive access: ``with cp.write() as p``, ``p`` the Pager itself, waiting for the
        holders to leave. ``Unavailable`` after ``into_inner()``."""
        return self._writing(True)

    def try_read(self) -> AbstractContextManager[PagerReader]:
        """As ``read()``, but entering the block raises ``WouldBlock`` instead of waiting."""
        return self._reading(False)

    def try_write(self) -> AbstractContextManager[Pager]:
        """As ``write()``, but entering the block raises ``WouldBlock`` instead of waiting."""
        return self._writing(False)

    def into_inner(self) -> Pager:
        """Wait for every holder to leave, then give the pager back; every later use of this
        object raises ``Unavailable`` (so does a second ``into_inner()``)."""
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
