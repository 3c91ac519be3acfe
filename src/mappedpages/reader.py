"""The read side shared by ``Pager``, ``ReadOnlyPager`` and ``Snapshot``: views, iteration,
closing and fork handling.

This layer checks handle types and page sizes, turns core indices into handles and hands out
memoryviews; the state, the validation of indices and the mapping belong to the core (see
_core_api.py): the writer's core for a ``Pager``, a snapshot core for the others.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
import warnings
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar, Union

from ._core_api import INTERNAL
from .aio import off_loop
from .backup import Progress, copy_snapshot
from .errors import OutOfBounds, PageSizeMismatch, ReservedPage, Unavailable
from .handles import PageId, ProtectedPageId, new_page_id, new_protected_id
from .views import Views

__all__ = ["AllocatedPageIter", "AllocatedProtectedPageIter", "PageReader"]

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
    for reader in list(_live):
        _orphans.append(reader._core)
        reader._core = _FORKED
        reader._lock = threading.RLock()  # another thread may have held it at the fork
        reader._n = 0  # so that the next index check asks the core, and raises
        reader._version += 1
        reader._forked()
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def close_inherited(*fds: int) -> None:
    """Close a forked child's copies of descriptors. The parent keeps its locks: they belong
    to the open file descriptions, which the parent still has."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def wrong_handle(handle: object, expected: type) -> Exception:
    if isinstance(handle, expected):
        return PageSizeMismatch(
            f"{handle!r} belongs to a pager of page size {handle[1]}"  # type: ignore[index]
        )
    return TypeError(f"expected a {expected.__name__}, got {type(handle).__name__}")


class PageReader(Views):
    """What every open file or snapshot offers: sizes, views and iteration.

    Not made directly: ``Pager.create``, ``Pager.open``, ``ReadOnlyPager.open`` and
    ``pager.snapshot()`` make its subclasses. After ``close()`` every call but ``close``,
    ``page_size`` and ``path`` raises ``Unavailable``.
    """

    __slots__ = ("__weakref__", "_core", "_lock", "_path", "_version")

    _core: Any  # a core, or a _DeadCore once the pager is unusable
    _path: str
    _version: int
    # Held by the calls that keep state of their own beside the core's (protected pages,
    # batches, flushes, snapshots, closing) and, by a Pager's batch, from start to end. Each
    # core call is atomic by itself (see _core_api), so reads and plain allocations skip it.
    _lock: threading.RLock

    # How to get one: calling the class refuses, since a reader exists only for a file or a
    # state that has been checked and mapped.
    _made_by: ClassVar[str] = "Pager.open(path, ...)"

    if TYPE_CHECKING:  # to a type checker, and to help(), the class takes no arguments

        def __init__(self) -> None: ...

    else:

        def __init__(self, *args, **kwargs):
            """Not called directly: raises TypeError, naming the call that makes one."""
            name = type(self).__name__
            raise TypeError(f"{name}(...) is not called directly: use {self._made_by}")

        __init__.__signature__ = inspect.Signature(
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        )

    def _setup(self, core: Any, path: str) -> None:
        self._lock = threading.RLock()
        self._core = core
        self._kind = getattr(core, "kind_raw", core.kind)
        self._set_fast_kind(*getattr(core, "fast_kind", (0, 0, None)))
        self._path = path
        self._ps = core.page_size
        self._version = 0
        self._n = core.page_count
        self._watch = 0
        self._remap()
        _live.add(self)

    def _forked(self) -> None:
        """Hook for subclasses: drop what a forked child must not use."""

    def close(self) -> None:
        """Release the file (a Pager makes everything durable first). Idempotent; returns
        None.

        Views taken before stay readable and safe. A Pager's batch still open is rolled back.
        """
        with self._lock:
            core = self._core
            if isinstance(core, _DeadCore):
                return
            self._core = _CLOSED
            self._n = 0  # so that the next index check asks the core, and raises
            self._version += 1
            self._rw = self._ro = memoryview(b"")
            _live.discard(self)
            self._closing(core)

    def _closing(self, core: Any) -> None:
        """Release ``core`` and what else the subclass holds."""
        core.close()

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
        """The page size in bytes, a power of two from 1024 to 2**28."""
        return self._ps

    @property
    def page_count(self) -> int:
        """Pages in the file's allocation state, reserved pages 0-2 included
        (``Unavailable`` once closed)."""
        return int(self._core.page_count)

    @property
    def free_page_count(self) -> int:
        """Pages of ``page_count`` that are free (``Unavailable`` once closed)."""
        return int(self._core.free_count)

    @property
    def generation(self) -> int:
        """The generation of the commit this state is (a writer: its last commit); it grows
        by one per commit. ``Unavailable`` once closed."""
        self._check_live()
        return int(self._core.generation)

    @property
    def path(self) -> str:
        """The file's path, as given when it was opened."""
        return self._path

    # -- reading -------------------------------------------------------------------------

    def _data_index(self, pid: PageId) -> int:
        """The index of a data page that may be viewed; raises for anything else."""
        if type(pid) is not PageId or pid[1] != self._ps:
            raise wrong_handle(pid, PageId)
        index: int = pid[0]
        if index >= self._n:
            self._n = n = self._core.page_count
            if index >= n:
                raise OutOfBounds(f"page {index} is beyond the file ({n} pages)")
        if index < 3 or self._core.kind(index) == INTERNAL:
            raise ReservedPage(f"page {index} is internal to the file format")
        return index

    def _get_page(self, pid: PageId) -> memoryview:
        """``get_page`` for what its quick path (views.py) leaves: it explains a bad handle,
        waits for another thread's batch and remaps after growth."""
        return self._view(self._data_index(pid), writable=False)

    def _view(self, index: int, *, writable: bool) -> memoryview:
        ps = self._ps
        start = index * ps
        if start + ps > len(self._ro):
            self._remap()
        return (self._rw if writable else self._ro)[start : start + ps]

    def get_protected_page(self, ppid: ProtectedPageId) -> memoryview:
        """Read-only ``memoryview`` of the protected page's committed content.

        Raises ``TypeError`` for anything but a ``ProtectedPageId``, ``PageSizeMismatch``,
        ``OutOfBounds`` for one that is not allocated and ``Unavailable`` once closed.
        """
        start = self._core.ppage(self._protected_slot(ppid)) * self._ps
        end = start + self._ps
        if end > len(self._ro):
            self._remap()
        return self._ro[start:end]

    def iter_allocated_pages(self) -> AllocatedPageIter:
        """An ``AllocatedPageIter``: ascending ``PageId``s of the allocated data pages (never
        reserved or internal pages). ``Unavailable`` once closed."""
        self._check_live()
        return AllocatedPageIter(self)

    def iter_allocated_protected_pages(self) -> AllocatedProtectedPageIter:
        """An ``AllocatedProtectedPageIter``: ascending ``ProtectedPageId``s of the allocated
        protected pages. ``Unavailable`` once closed."""
        self._check_live()
        return AllocatedProtectedPageIter(self)

    def backup(self, dest: StrPath) -> None:
        """Copy the commit this state shows into the new file ``dest``, consistently, while a
        writer goes on committing: written under a temporary name in ``dest``'s directory,
        synced, then linked under the name (``FileExistsError`` if it exists). Free pages are
        left as holes, so the copy is sparse. The copy opens and checks clean; a copy cut
        short leaves no file at ``dest``. The file gets ``0o666 & ~umask``."""
        self._backup(os.fspath(dest), None)

    async def backup_async(self, dest: StrPath) -> None:
        """``backup(dest)``, the copy and its sync off the event loop."""
        await off_loop(self.backup, dest, inline=self._owns_batch())

    def _owns_batch(self) -> bool:
        """Whether the calling thread has a batch of this file open (a writer's question)."""
        return False

    def _backup(self, dest: str, progress: Progress | None) -> None:
        with self._lock:  # a refresh from another thread waits for the copy
            self._check_live()
            copy_snapshot(self._core, dest, progress)

    def _protected_slot(self, ppid: ProtectedPageId) -> int:
        if type(ppid) is not ProtectedPageId or ppid[1] != self._ps:
            raise wrong_handle(ppid, ProtectedPageId)
        self._check_live()
        slot: int = ppid[0]
        if not self._core.pused(slot):
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


class _ScanIter:
    """Ascending numbers from a core's scan, fetched in chunks; invalid once the state the
    owner shows changes (its ``_version``)."""

    __slots__ = ("_buf", "_next", "_owner", "_pos", "_version")

    def __init__(self, owner: PageReader) -> None:
        self._owner = owner
        self._version = owner._version
        self._buf: list[int] = []
        self._pos = 0
        self._next = 0  # first number not yet scanned

    def _scan(self, start: int) -> list[int]:
        raise NotImplementedError

    def _changed(self) -> Exception:
        if self._owner._closed_or_dead():
            return Unavailable("the pager was closed while iterating")
        return RuntimeError("allocation state changed during iteration")

    def _number(self) -> int:
        owner = self._owner
        if owner._version != self._version:
            raise self._changed()
        if self._pos == len(self._buf):
            if self._next < 0:
                raise StopIteration
            self._buf = self._scan(self._next)
            self._pos = 0
            if not self._buf:
                self._next = -1
                raise StopIteration
            self._next = self._buf[-1] + 1
        number = self._buf[self._pos]
        self._pos += 1
        return number


class AllocatedPageIter(_ScanIter, Iterator[PageId]):
    """Ascending ids of the allocated data pages (``iter_allocated_pages()``).

    Once the allocation state it reads changes, ``next()`` raises ``RuntimeError`` (as a dict
    does), or ``Unavailable`` once its owner is closed.
    """

    __slots__ = ()

    def __iter__(self) -> AllocatedPageIter:
        return self

    def _scan(self, start: int) -> list[int]:
        return self._owner._core.scan(start, _SCAN_CHUNK)  # type: ignore[no-any-return]

    def __next__(self) -> PageId:
        return new_page_id(self._number(), self._owner._ps)


class AllocatedProtectedPageIter(_ScanIter, Iterator[ProtectedPageId]):
    """Ascending ids of the allocated protected pages (``iter_allocated_protected_pages()``).

    Once the allocation state it reads changes, ``next()`` raises ``RuntimeError``, or
    ``Unavailable`` once its owner is closed.
    """

    __slots__ = ()

    def __iter__(self) -> AllocatedProtectedPageIter:
        return self

    def _scan(self, start: int) -> list[int]:
        return self._owner._core.pscan(start, _SCAN_CHUNK)  # type: ignore[no-any-return]

    def __next__(self) -> ProtectedPageId:
        return new_protected_id(self._number(), self._owner._ps)
