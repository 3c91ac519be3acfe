"""The read side shared by ``Pager`` and ``ReadOnlyPager``: opening, views, iteration.

This layer checks handle types and page sizes, turns core indices into handles and hands out
memoryviews; allocation state, validation of indices, commits and the mapping belong to the
core (see _core_api.py), which is the C core or the pure-Python core.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar, Union

from . import _backend
from ._core_api import CoreModule
from ._snapshot import Snapshot, load
from .errors import OutOfBounds, PageSizeMismatch, ReservedPage, Unavailable
from .handles import PageId, ProtectedPageId, new_page_id
from .protected import AllocatedProtectedPageIter, Directory

__all__ = ["AllocatedPageIter", "PageReader"]

StrPath = Union[str, "os.PathLike[str]"]
R = TypeVar("R", bound="PageReader")

# Scanning hands the iterator this many page numbers per call into the core.
_SCAN_CHUNK = 4096


class _DeadCore:
    """Stands in for the core once a pager is unusable: any use raises Unavailable."""

    def __init__(self, why: str) -> None:
        self._why = why

    def __getattr__(self, name: str) -> NoReturn:
        raise Unavailable(self._why)


_CLOSED = _DeadCore("the pager is closed; open the file again")
_FORKED = _DeadCore("the pager was opened before fork(); open the file again in this process")

_live: weakref.WeakSet[PageReader] = weakref.WeakSet()
# Cores of pagers inherited through fork(): kept alive for ever, because releasing them in the
# child would unmap memory that the child's views may still point at.
_orphans: list[Any] = []


def _after_fork_in_child() -> None:
    for pager in list(_live):
        _orphans.append(pager._core)
        pager._core = _FORKED
        pager._n = 0  # so that the next index check asks the core, and raises
        pager._version += 1
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _wrong_handle(handle: object, expected: type) -> Exception:
    if isinstance(handle, expected):
        return PageSizeMismatch(
            f"{handle!r} belongs to a pager of page size {handle[1]}"  # type: ignore[index]
        )
    return TypeError(f"expected a {expected.__name__}, got {type(handle).__name__}")


class PageReader:
    """What every open file offers: sizes, views and iteration. Not made directly."""

    __slots__ = (
        "__weakref__",
        "_backend",
        "_c",
        "_c0",
        "_core",
        "_crc",
        "_dir",
        "_fd",
        "_internal",
        "_n",
        "_path",
        "_ps",
        "_ro",
        "_rw",
        "_version",
    )

    _core: Any  # a Core, or a _DeadCore once the pager is unusable
    _backend: CoreModule  # the core module it was opened with (_core_c or _core_py)
    _fd: int
    _path: str
    _ps: int
    _c0: int
    _c: int
    # A page count no larger than the core's: page counts only grow, except on rollback,
    # which refreshes it. Checking an index against it first keeps get_page off the core.
    _n: int
    _rw: memoryview
    _ro: memoryview
    _version: int
    _dir: Directory
    _internal: set[int]  # pages of the protected-page directory: never data pages
    _crc: Callable[[Any], int]

    def __init__(self, *args: object, **kwargs: object) -> None:
        name = type(self).__name__
        raise TypeError(f"use {name}.open(path, ...) (or Pager.create) to make a {name}")

    @classmethod
    def _attach(
        cls: type[R], fd: int, path: str, page_size: int, writable: bool, sync: bool, prealloc: bool
    ) -> R:
        module = _backend.CORE
        try:
            snapshot = load(fd, page_size, module, writable=writable, sync=sync, prealloc=prealloc)
        except BaseException:
            os.close(fd)
            raise
        self = object.__new__(cls)
        self._backend = module
        self._fd = fd
        self._path = path
        core = snapshot.core
        self._ps = core.page_size
        self._c0 = core.geometry.c0
        self._c = core.geometry.c
        self._version = 0
        self._crc = module.crc32c
        self._adopt(snapshot)
        self._opened()
        _live.add(self)
        return self

    def _adopt(self, snapshot: Snapshot) -> None:
        """Take ``snapshot`` as the open state (at open, and a reader's refresh)."""
        self._core = snapshot.core
        self._n = snapshot.core.page_count
        self._dir = snapshot.directory
        self._internal = snapshot.directory.internal
        self._remap()

    def _opened(self) -> None:
        """Hook for subclasses: set up their own state once the core is open."""

    def close(self) -> None:
        """Release the file (a Pager makes everything durable first). Idempotent.

        Views taken before stay readable and safe.
        """
        core = self._core
        if isinstance(core, _DeadCore):
            return
        self._core = _CLOSED
        self._n = 0  # so that the next index check asks the core, and raises
        self._version += 1
        self._rw = self._ro = memoryview(b"")
        _live.discard(self)
        self._closing()
        try:
            core.close()
        finally:
            os.close(self._fd)

    def _closing(self) -> None:
        """Hook for subclasses: forget state that ends with the open file."""

    def __enter__(self: R) -> R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is None or isinstance(core, _DeadCore):
            return
        name = type(self).__name__
        warnings.warn(f"unclosed {name} {self._path!r}", ResourceWarning, stacklevel=2)
        self.close()

    def __repr__(self) -> str:
        state = "closed" if isinstance(self._core, _DeadCore) else f"{self.page_count} pages"
        return f"<{type(self).__name__} {self._path!r} page_size={self._ps} {state}>"

    # -- properties ----------------------------------------------------------------------

    @property
    def page_size(self) -> int:
        return self._ps

    @property
    def page_count(self) -> int:
        """Pages in the file's allocation state, reserved pages 0-2 included."""
        return int(self._core.page_count)

    @property
    def free_page_count(self) -> int:
        return int(self._core.free_count)

    @property
    def path(self) -> str:
        return self._path

    # -- reading -------------------------------------------------------------------------

    def _data_index(self, pid: PageId) -> int:
        """The index of a data page that may be viewed; raises for anything else."""
        if type(pid) is not PageId or pid[1] != self._ps:
            raise _wrong_handle(pid, PageId)
        index: int = pid[0]
        if index >= self._n:
            self._n = n = self._core.page_count
            if index >= n:
                raise OutOfBounds(f"page {index} is beyond the file ({n} pages)")
        c0 = self._c0
        if index < 3 or (index >= c0 and (index - c0) % self._c < 2) or index in self._internal:
            raise ReservedPage(f"page {index} is internal to the file format")
        return index

    def get_page(self, pid: PageId) -> memoryview:
        """Read-only view of the page, straight into the mapping."""
        start = self._data_index(pid) * self._ps
        end = start + self._ps
        if end > len(self._ro):
            self._remap()
        return self._ro[start:end]

    def get_protected_page(self, ppid: ProtectedPageId) -> memoryview:
        """Read-only view of the committed content; staged writes are not visible."""
        start = self._dir.current_page(self._protected_slot(ppid)) * self._ps
        end = start + self._ps
        if end > len(self._ro):
            self._remap()
        return self._ro[start:end]

    def iter_allocated_pages(self) -> AllocatedPageIter:
        """Ascending ids of the allocated regular data pages."""
        self._check_live()
        return AllocatedPageIter(self)

    def iter_allocated_protected_pages(self) -> AllocatedProtectedPageIter:
        """Ascending ids of the allocated protected pages."""
        self._check_live()
        return AllocatedProtectedPageIter(self, self._dir, self._ps)

    def _protected_slot(self, ppid: ProtectedPageId) -> int:
        if type(ppid) is not ProtectedPageId or ppid[1] != self._ps:
            raise _wrong_handle(ppid, ProtectedPageId)
        self._check_live()
        slot: int = ppid[0]
        if not self._dir.is_used(slot):
            raise OutOfBounds(f"protected page {slot} is not allocated")
        return slot

    def _check_live(self) -> None:
        core = self._core
        if isinstance(core, _DeadCore):
            raise Unavailable(core._why)

    def _closed_or_dead(self) -> bool:
        return isinstance(self._core, _DeadCore)

    def _remap(self) -> None:
        self._rw = self._core.mapping()
        self._ro = self._rw.toreadonly()


class AllocatedPageIter(Iterator[PageId]):
    """Iterator over allocated regular pages; invalid once the allocation state changes."""

    __slots__ = ("_buf", "_next", "_pager", "_pos", "_version")

    def __init__(self, pager: PageReader) -> None:
        self._pager = pager
        self._version = pager._version
        self._buf: list[int] = []
        self._pos = 0
        self._next = 0  # first page index not yet scanned

    def __iter__(self) -> AllocatedPageIter:
        return self

    def __next__(self) -> PageId:
        pager = self._pager
        if pager._version != self._version:
            if pager._closed_or_dead():
                raise Unavailable("the pager was closed while iterating")
            raise RuntimeError("allocation state changed during iteration")
        internal = pager._internal  # pages of the protected-page directory are not data pages
        while True:
            if self._pos == len(self._buf):
                if self._next < 0:
                    raise StopIteration
                self._buf = pager._core.scan(self._next, _SCAN_CHUNK)
                self._pos = 0
                if not self._buf:
                    self._next = -1
                    raise StopIteration
                self._next = self._buf[-1] + 1
            index = self._buf[self._pos]
            self._pos += 1
            if index not in internal:
                return new_page_id(index, pager._ps)
