"""The Pager: a file of fixed-size pages with crash-safe allocation (API.md, "Pager").

The read side (views, iterators, opening a core) is shared with ReadOnlyPager in reader.py;
this module adds everything that changes the file: allocation, protected writes, batches.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from . import _backend
from ._files import create_locked, open_locked
from .aio import AsyncPagerMethods
from .errors import DirectoryFull, DoubleFree, OutOfBounds, ReservedPage
from .handles import (
    PageId,
    ProtectedPageId,
    check_count,
    check_page_size,
    new_page_id,
    new_page_ids,
    new_protected_id,
)
from .protected import Directory, ProtectedPageWriter
from .reader import AllocatedPageIter, PageReader, StrPath, _wrong_handle

__all__ = ["AllocatedPageIter", "Pager"]

T = TypeVar("T")


class Pager(PageReader, AsyncPagerMethods):
    """A file of fixed-size pages. Make one with ``Pager.create`` or ``Pager.open``."""

    __slots__ = ("_async_lock", "_batch_depth", "_batch_doomed", "_then", "_undo", "_zero")

    _batch_depth: int
    _batch_doomed: bool
    # what state kept beside the file (SubPageAllocator) runs when the batch commits or aborts
    _then: list[Callable[[], None]]
    _undo: list[Callable[[], None]]
    _zero: bytes

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def create(
        cls, path: StrPath, page_size: int = 4096, *, sync: bool = True, preallocate: bool = True
    ) -> Pager:
        """Create a new file (``FileExistsError`` if ``path`` exists) and open it."""
        page_size = check_page_size(page_size)
        spath = os.fspath(path)
        fd = create_locked(spath, page_size, _backend.CORE.crc32c)
        return cls._attach(fd, spath, page_size, True, bool(sync), bool(preallocate))

    @classmethod
    def open(
        cls,
        path: StrPath,
        page_size: int | None = None,
        *,
        sync: bool = True,
        preallocate: bool = True,
    ) -> Pager:
        """Open an existing file; ``page_size`` None takes it from the file."""
        wanted = 0 if page_size is None else check_page_size(page_size)
        spath = os.fspath(path)
        fd = open_locked(spath)
        return cls._attach(fd, spath, wanted, True, bool(sync), bool(preallocate))

    def _opened(self) -> None:
        self._batch_depth = 0
        self._batch_doomed = False
        self._then = []
        self._undo = []
        self._zero = b""
        self._async_lock = threading.Lock()
        if self._dir.needs_repair:  # leftovers of a commit that never completed
            self._protected_op(lambda: None)

    def _closing(self) -> None:
        self._batch_depth = 0

    @property
    def protected(self) -> ProtectedPages:
        """This pager's protected pages as a ``BulkPageAllocator[ProtectedPageId]``."""
        return ProtectedPages(self)

    # -- regular pages -------------------------------------------------------------------

    def alloc(self) -> PageId:
        """Allocate one page (growing the file when full): one commit."""
        index = self._core.alloc()
        self._version += 1
        return new_page_id(index, self._ps)

    def free(self, pid: PageId) -> None:
        if type(pid) is not PageId or pid[1] != self._ps:
            raise _wrong_handle(pid, PageId)
        index = pid[0]
        if index in self._internal:
            raise ReservedPage(f"page {index} belongs to the protected-page directory")
        self._core.free(index)
        self._version += 1

    def alloc_bulk(self, n: int) -> list[PageId]:
        """Allocate ``n`` pages in one commit."""
        if check_count(n) == 0:
            return []
        indices = self._core.alloc_bulk(n)
        self._version += 1
        return new_page_ids(indices, self._ps)

    def free_bulk(self, ids: Iterable[PageId]) -> None:
        """Free every id in one commit; one bad id (or a duplicate) frees nothing."""
        ps = self._ps
        indices: list[int] = []
        for pid in ids:
            if type(pid) is not PageId or pid[1] != ps:
                raise _wrong_handle(pid, PageId)
            if pid[0] in self._internal:
                raise ReservedPage(f"page {pid[0]} belongs to the protected-page directory")
            indices.append(pid[0])
        if indices:
            self._core.free_bulk(indices)
            self._version += 1

    def get_page_mut(self, pid: PageId) -> memoryview:
        """Writable view of the page; ``flush`` makes what is written durable."""
        start = self._data_index(pid) * self._ps
        end = start + self._ps
        if end > len(self._rw):
            self._remap()
        return self._rw[start:end]

    # -- protected pages -----------------------------------------------------------------

    def alloc_protected(self) -> ProtectedPageId:
        """Allocate a protected page (content: zeros) in one commit."""
        slot = self._protected_op(self._alloc_protected_one)
        self._version += 1
        return new_protected_id(slot, self._ps)

    def alloc_protected_bulk(self, n: int) -> list[ProtectedPageId]:
        """Allocate ``n`` protected pages in one commit: all of them or, on failure, none."""
        if check_count(n) == 0:
            return []
        if n > self._dir.room():
            raise DirectoryFull(f"room for {self._dir.room()} more protected pages, not {n}")
        slots = self._protected_op(lambda: [self._alloc_protected_one() for _ in range(n)])
        self._version += 1
        ps = self._ps
        return [new_protected_id(s, ps) for s in slots]

    def free_protected(self, ppid: ProtectedPageId) -> None:
        slot = self._protected_slot(ppid)
        self._protected_op(lambda: self._free_slots([slot]))
        self._version += 1

    def free_protected_bulk(self, ids: Iterable[ProtectedPageId]) -> None:
        """Free every id in one commit; one bad id (or a duplicate) frees nothing."""
        slots: list[int] = []
        seen: set[int] = set()
        for ppid in ids:
            slot = self._protected_slot(ppid)
            if slot in seen:
                raise DoubleFree(f"protected page {slot} appears twice")
            seen.add(slot)
            slots.append(slot)
        if slots:
            self._protected_op(lambda: self._free_slots(slots))
            self._version += 1

    def protected_writer(self, ppid: ProtectedPageId) -> ProtectedPageWriter:
        """A writer for the page (also ``ppid.get_mut(pager)``): stage, then commit."""
        slot = self._protected_slot(ppid)
        start = self._dir.current_page(slot) * self._ps
        content = self._core.mapping()[start : start + self._ps].tobytes()
        return ProtectedPageWriter(self, ppid, self._dir.serial[slot], content)

    def _commit_protected(self, ppid: ProtectedPageId, serial: int, content: bytearray) -> None:
        def write() -> None:
            slot = self._protected_slot(ppid)
            if self._dir.serial[slot] != serial:
                raise OutOfBounds(f"protected page {slot} was freed since the writer was made")
            target = self._dir.write_target(slot)
            view = self._core.mapping()
            view[target * self._ps : (target + 1) * self._ps] = content
            self._core.stage([target])

        self._protected_op(write)

    def _alloc_protected_one(self) -> int:
        d = self._dir
        if not d.free_heap:
            if len(d.blocks) >= d.max_blocks:
                raise DirectoryFull("the protected-page directory is full")
            if not d.index_pages[0]:
                a, b = self._core.alloc_bulk(2)
                d.create_index(a, b)
                self._core.set_directory(a, b)
            p0, p1 = self._core.alloc_bulk(2)
            d.add_block(p0, p1)
        pa, pb = self._core.alloc_bulk(2)
        ps = self._ps
        if len(self._zero) != ps:
            self._zero = bytes(ps)
        page = self._core.mapping()[pa * ps : (pa + 1) * ps]
        # A page that reads as zeros is not written again: space reserved by growth and never
        # written would otherwise have the file system convert its extent at the sync. It is
        # listed all the same, so that zeros written but not yet synced land with the commit.
        if page.tobytes() != self._zero:
            page[:] = self._zero
        self._core.stage([pa])
        return d.take_slot(pa, pb)

    def _free_slots(self, slots: list[int]) -> None:
        pages: list[int] = []
        for slot in slots:
            pages.extend(self._dir.release_slot(slot))
        self._core.free_bulk(pages)

    def _protected_op(self, fn: Callable[[], T]) -> T:
        """Run one directory change: its own commit, or part of the open batch."""
        if self._batch_depth:
            try:
                return fn()
            except BaseException:
                self._batch_doomed = True  # the directory cannot undo one call inside a batch
                raise
        self._core.begin()
        try:
            result = fn()
        except BaseException:
            self._abort()
            raise
        self._commit_all()
        return result

    def _commit_all(self) -> None:
        """Commit the open batch together with the directory blocks it changed."""
        core, d = self._core, self._dir
        log = d.record_log()
        if d.new:  # a new block zeroes its second copy's header: not a page that stays
            core.two_barriers()
        if d.dirty or d.index_dirty:
            core.stage(d.write(core.mapping(), core.generation + 1, self._crc))
        if log is not None:
            core.set_log(log)
        core.commit()
        d.committed()
        self._undo.clear()
        then, self._then = self._then, []
        for fn in then:
            fn()

    def _abort(self) -> None:
        """Return to the last committed state: the core's bitmap and the directory, then what
        was registered with ``_on_rollback`` (latest first)."""
        core = self._core
        core.rollback()
        self._n = core.page_count
        self._version += 1
        self._dir = Directory.load(core.mapping(), core, self._crc)
        self._internal = self._dir.internal
        self._then.clear()
        undo, self._undo = self._undo, []
        for fn in reversed(undo):
            fn()

    def _on_rollback(self, undo: Callable[[], None]) -> None:
        """Inside a batch, run ``undo`` if the batch is rolled back: for state kept beside the
        file (``SubPageAllocator``) that must return with the file to the last commit."""
        if self._batch_depth:
            self._undo.append(undo)

    def _on_commit(self, then: Callable[[], None]) -> None:
        """Inside a batch, run ``then`` once the batch has committed."""
        if self._batch_depth:
            self._then.append(then)

    def flush(self, ids: Iterable[PageId] | None = None) -> None:
        """Make data written through views durable: every page, or just ``ids``."""
        if ids is None:
            self._core.flush(None)
        else:
            self._core.flush([self._data_index(pid) for pid in ids])

    @contextmanager
    def batch(self) -> Iterator[Pager]:
        """Everything allocated or freed inside is committed by one commit at the end.

        If an exception leaves the block, none of it is kept. A batch inside a batch joins
        it; an exception leaving the inner block dooms the whole batch.
        """
        core = self._core
        if self._batch_depth == 0:
            core.begin()
            self._batch_doomed = False
        self._batch_depth += 1
        try:
            yield self
        except BaseException:
            self._end_batch(failed=True)
            raise
        self._end_batch(failed=False)

    def _end_batch(self, failed: bool) -> None:
        if self._batch_depth == 0:  # closed inside the block: close() rolled back
            return
        self._batch_depth -= 1
        if failed:
            self._batch_doomed = True
        if self._batch_depth:
            return
        if self._batch_doomed:
            self._abort()
            if not failed:
                raise RuntimeError("the batch was rolled back: an inner batch raised")
        else:
            self._commit_all()


class ProtectedPages:
    """``pager.protected``: alloc/free/alloc_bulk/free_bulk of protected pages, so that code
    written for any ``BulkPageAllocator`` can allocate them."""

    __slots__ = ("pager",)

    def __init__(self, pager: Pager) -> None:
        self.pager = pager

    def alloc(self) -> ProtectedPageId:
        return self.pager.alloc_protected()

    def free(self, handle: ProtectedPageId, /) -> None:
        self.pager.free_protected(handle)

    def alloc_bulk(self, n: int, /) -> list[ProtectedPageId]:
        return self.pager.alloc_protected_bulk(n)

    def free_bulk(self, ids: Iterable[ProtectedPageId], /) -> None:
        self.pager.free_protected_bulk(ids)

    def __repr__(self) -> str:
        return f"<protected pages of {self.pager!r}>"
