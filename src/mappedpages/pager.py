"""The Pager: a file of fixed-size pages with crash-safe allocation (docs/API.md, "Pager").

The read side (views, iterators) is shared with ReadOnlyPager and Snapshot in reader.py; this
module adds everything that changes the file: allocation, protected writes, batches, and the
surface that libraries built on a pager use to follow its batches (``in_batch``,
``on_commit``, ``on_rollback``).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from . import _backend, _v1
from . import format as fmt
from ._core_api import DATA
from ._files import RECORDS_WINDOW, create_locked, drop_cached, open_locked
from ._readertable import ReaderTable, WriterView
from .aio import AsyncPagerMethods
from .backup import Progress
from .errors import (
    DoubleFree,
    InvalidPageSize,
    MappedPageError,
    OutOfBounds,
    PageInUse,
    Unavailable,
    WriteConflict,
)
from .handles import (
    PageId,
    ProtectedPageId,
    check_count,
    check_page_size,
    new_page_id,
    new_page_ids,
    new_protected_id,
)
from .protected import ProtectedPageWriter
from .reader import PageReader, StrPath, close_inherited, wrong_handle
from .snapshot import Snapshot
from .views import WritableViews

__all__ = ["Pager", "ProtectedPages"]


class Pager(PageReader, WritableViews, AsyncPagerMethods):
    """A file of fixed-size pages, open for writing; one ``Pager`` per file at a time.

    Made by ``Pager.create(path, page_size=4096, *, sync=True, preallocate=True, mode=0o666)``
    (a new file) or ``Pager.open(path, page_size=None, *, sync=True, preallocate=True,
    create=False, mode=0o666)``; calling ``Pager(...)`` raises ``TypeError``. Close it with
    ``close()`` or use it as a context manager. Every change to which pages are in use is one
    atomic commit (or one per ``batch()``). docs/API.md describes every method.
    """

    __slots__ = (
        "_batch_depth",
        "_batch_doomed",
        "_batch_thread",
        "_fd",
        "_free_checks",
        "_serial",
        "_serials",
        "_table",
        "_then",
        "_undo",
    )
    _made_by = "Pager.create(path, ...) or Pager.open(path, ...)"

    _fd: int
    _batch_depth: int
    _batch_doomed: bool
    _batch_thread: int  # the thread whose batch is open (0: none)
    # what state kept beside the file (SubPageAllocator) runs when the batch commits or aborts
    _then: list[Callable[[], None]]
    _undo: list[Callable[[], None]]
    _serial: int
    # protected slot -> (serial of its allocation, writes committed since): a writer made
    # before either changed may not commit
    _serials: dict[int, tuple[int, int]]
    # add_free_check(): what says a regular page is in use by a structure built on the pager
    _free_checks: list[weakref.WeakMethod[Callable[[int], bool]]]
    _table: ReaderTable | None

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: StrPath,
        page_size: int = 4096,
        *,
        sync: bool = True,
        preallocate: bool = True,
        mode: int = 0o666,
    ) -> Pager:
        """Create a new file and open it; returns the ``Pager``.

        The file's permissions are ``mode & ~umask``, as ``open()`` and ``os.open`` give.
        Raises ``FileExistsError`` if ``path`` exists, ``InvalidPageSize`` for a page size that
        is not a power of two from 1024 to 2**28, ``TypeError``/``ValueError`` for a bad
        ``mode``, and ``OSError`` (naming ``path``) when the file cannot be made; a failed
        create leaves nothing behind.
        """
        page_size = check_page_size(page_size)
        if isinstance(mode, bool) or not isinstance(mode, int):
            raise TypeError(f"mode must be an int, not {type(mode).__name__}")
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"mode {mode:#o} is not a file mode (0 to 0o7777)")
        spath = os.fspath(path)
        fd = create_locked(spath, page_size, _backend.CORE.crc32c, mode)
        return cls._attach(fd, spath, page_size, bool(sync), bool(preallocate))

    @classmethod
    def open(
        cls,
        path: StrPath,
        page_size: int | None = None,
        *,
        sync: bool = True,
        preallocate: bool = True,
        create: bool = False,
        mode: int = 0o666,
    ) -> Pager:
        """Open an existing file for writing; returns the ``Pager``. ``page_size`` None takes
        it from the file.

        With ``create=True`` a missing file is created first (``page_size`` None: 4096;
        ``mode`` as for ``create``), so the same call serves the first run and every later one.
        Raises ``FileNotFoundError`` for a missing file (without ``create``), ``FileLocked``
        when another Pager has it open, ``InvalidPageSize`` for a bad page size or one that is
        not the file's, and ``CorruptSuperblock`` / ``CorruptMetadata`` (or another
        ``MappedPageError``) for a file that is not a mappedpages file or is damaged beyond
        its last sound commit; warns ``RecoveryWarning`` when it opens the commit before the
        newest. A format-1 file is upgraded to format 2 in one commit.
        """
        wanted = 0 if page_size is None else check_page_size(page_size)
        spath = os.fspath(path)
        while True:
            try:
                fd = open_locked(spath)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    return cls.create(
                        spath, wanted or 4096, sync=sync, preallocate=preallocate, mode=mode
                    )
                except FileExistsError:
                    continue  # another process created it meanwhile: open that one
            return cls._attach(fd, spath, wanted, bool(sync), bool(preallocate))

    @classmethod
    def _attach(cls, fd: int, path: str, page_size: int, sync: bool, prealloc: bool) -> Pager:
        module = _backend.CORE
        # page 0 and the records are written by every commit: in the small folios the mapping
        # makes, not in what a copy or an older writer's write(2) left (_files.drop_cached)
        drop_cached(fd, RECORDS_WINDOW)
        try:
            try:
                core = module.open_core(
                    fd, page_size, writable=True, sync=sync, preallocate=prealloc
                )
            except fmt.Version1:  # upgraded in one commit before anything else
                v1 = _v1.load(fd, module.crc32c)
                if page_size and page_size != v1.page_size:
                    raise InvalidPageSize(
                        f"the file's page size is {v1.page_size}, not {page_size}"
                    ) from None
                core = module.upgrade_core(fd, v1, sync=sync, preallocate=prealloc)
        except BaseException:
            os.close(fd)
            raise
        self = object.__new__(cls)
        self._fd = fd
        self._batch_depth = 0
        self._batch_doomed = False
        self._then = []
        self._undo = []
        self._serial = 0
        self._serials = {}
        self._batch_thread = 0
        self._free_checks = []
        self._table = None
        try:
            mode = os.fstat(fd).st_mode
            self._table = ReaderTable.open(path, core.file_id, mode, writer=True)
            if self._table is not None:
                view = WriterView(self._table, module.fence)
                view.check_all()
                core.attach_table(view if module.NAME == "python" else self._table)
        except BaseException:
            core.close()
            os.close(fd)
            raise
        self._setup(core, path)
        self._batch_over()
        self._set_fast_write(*getattr(core, "fast_write", (0, 0)))
        self._write_fd = fd
        return self

    def _closing(self, core: Any) -> None:
        self._batch_depth = 0
        self._write_fd = -1
        try:
            core.close()
        finally:
            if self._table is not None:
                self._table.close()
                self._table = None
            os.close(self._fd)

    def _forked(self) -> None:
        self._write_fd = -1
        close_inherited(self._fd, *((self._table.fd,) if self._table is not None else ()))
        self._table = None

    @property
    def protected(self) -> ProtectedPages:
        """This pager's protected pages as a ``BulkPageAllocator[ProtectedPageId]``: a
        ``ProtectedPages`` whose ``alloc``/``free``/``alloc_bulk``/``free_bulk`` are
        ``alloc_protected`` and the rest."""
        return ProtectedPages(self)

    # -- regular pages -------------------------------------------------------------------

    def alloc(self) -> PageId:
        """Allocate one data page (growing the file when full) in one commit; returns its
        ``PageId``. Pages 0-2 and internal pages are never returned. Raises ``OSError``
        (``ENOSPC``) when the disk has no room, ``Unavailable`` once closed."""
        index = self._core.alloc()
        self._version += 1
        return new_page_id(index, self._ps)

    def free(self, pid: PageId) -> None:
        """Free a data page in one commit. A snapshot that still has it keeps reading it whole.

        Raises ``TypeError`` for anything but a ``PageId``, ``PageSizeMismatch`` for one of
        another page size, ``OutOfBounds`` beyond the file, ``ReservedPage`` for an internal
        page, ``DoubleFree`` for a free page and ``PageInUse`` for the parent of live
        sub-pages.
        """
        if type(pid) is not PageId or pid[1] != self._ps:
            raise wrong_handle(pid, PageId)
        if self._free_checks:
            self._check_not_held([pid[0]])
        self._core.free(pid[0])
        self._version += 1

    def alloc_bulk(self, n: int) -> list[PageId]:
        """Allocate ``n`` data pages in one commit; returns their ``PageId``s (``[]`` for 0).

        Raises ``TypeError`` for an ``n`` that is not an int, ``ValueError`` for a negative
        one or one no file can hold, ``OSError`` (``ENOSPC``) when the disk has no room; on
        failure nothing is allocated.
        """
        if check_count(n) == 0:
            return []
        self._check_room(n)
        indices = self._core.alloc_bulk(n)
        self._version += 1
        return new_page_ids(indices, self._ps)

    def free_bulk(self, ids: Iterable[PageId]) -> None:
        """Free every id of the iterable in one commit; one bad id (or a duplicate) frees
        nothing. Raises as ``free`` does, and ``DoubleFree`` for a duplicate."""
        ps = self._ps
        indices: list[int] = []
        for pid in ids:
            if type(pid) is not PageId or pid[1] != ps:
                raise wrong_handle(pid, PageId)
            indices.append(pid[0])
        if self._free_checks:
            self._check_not_held(indices)
        if indices:
            self._core.free_bulk(indices)
            self._version += 1

    def _check_room(self, n: int) -> None:
        """A count no file can hold is refused at once, the same way on both cores (the file
        and its memory would give out long before)."""
        if n > fmt.PAGE_LIMIT - self.page_count:
            raise ValueError(f"{n} pages are more than a file can hold (2**48 pages)")

    def is_allocated(self, pid: PageId) -> bool:
        """Whether ``pid`` is a data page in use (in the state being built, inside a batch).

        Raises ``TypeError``, ``PageSizeMismatch`` or ``OutOfBounds`` for an id that is not a
        page of this file.
        """
        if type(pid) is not PageId or pid[1] != self._ps:
            raise wrong_handle(pid, PageId)
        return bool(self._core.kind(pid[0]) == DATA)

    def _get_page_mut(self, pid: PageId) -> memoryview:
        """``get_page_mut`` for what its quick path (views.py) leaves, as ``_get_page``: then
        the core hears of the view (a page the batch allocated is not sealed, and a record
        vouching for the page is retired). The C core's quick path tells it itself
        (mp_view_try); with the pure core, every call comes here while ``_watch`` is set."""
        index = self._data_index(pid)
        view = self._view(index, writable=True)
        self._retire(index, viewing=True)
        return view

    def _write_page(self, pid: PageId, data: Any, offset: int) -> None:
        """``write_page`` for what its quick path (views.py) leaves: the checks and errors,
        and the retirement of a record that vouches for the page. It writes with pwrite: the
        page cache is the mapping's, so the bytes land where a view's write would, without
        the write fault a clean mapped page takes (docs/DESIGN.md, "Sealed pages")."""
        index = self._data_index(pid)
        src = memoryview(data).cast("B")
        ps = self._ps
        if type(offset) is not int or not 0 <= offset <= ps - len(src):
            raise ValueError(
                f"{len(src)} bytes at offset {offset!r} do not fit in a page of {ps} bytes"
            )
        self._retire(index)
        if os.pwrite(self._fd, src, index * ps + offset) != len(src):
            raise OSError(f"a short write to page {index}")

    def _retire(self, index: int, viewing: bool = False) -> None:
        """Before page ``index`` is written: a record in force that vouches for it is retired
        (docs/FORMAT.md, "Sealed pages"); a page the open batch sealed, now viewed, is flushed
        by it instead. The core decides, under the lock that another thread's batch holds to
        its end, so that what that batch sealed is known."""
        with self._lock:
            if self._core.retire(index, viewing):
                self._batch_over(in_batch=bool(self._batch_depth))

    def add_free_check(self, check: Callable[[int], bool]) -> None:
        """Make ``free`` and ``free_bulk`` raise ``PageInUse`` for a page whose index
        ``check(index)`` says a structure built on this pager still uses (``SubPageAllocator``
        registers its parents). ``check`` is a bound method, held weakly: it goes with its
        object. ``remove_free_check`` takes it back."""
        self._free_checks.append(weakref.WeakMethod(check))

    def remove_free_check(self, check: Callable[[int], bool]) -> None:
        """Undo ``add_free_check(check)``."""
        self._free_checks = [r for r in self._free_checks if r() not in (None, check)]

    def _check_not_held(self, indices: list[int]) -> None:
        for ref in self._free_checks:
            check = ref()
            if check is None:
                continue
            for index in indices:
                if check(index):
                    raise PageInUse(
                        f"page {index} holds live sub-pages; free them through their allocator"
                    )

    # -- protected pages -----------------------------------------------------------------

    def alloc_protected(self) -> ProtectedPageId:
        """Allocate a protected page (content: zeros) in one commit; returns its
        ``ProtectedPageId``. Raises ``OSError`` (``ENOSPC``) when the disk has no room."""
        with self._lock:
            (slot,) = self._change(lambda: self._core.palloc(1))
            return self._new_protected([slot])[0]

    def alloc_protected_bulk(self, n: int) -> list[ProtectedPageId]:
        """Allocate ``n`` protected pages in one commit: all of them or, on failure, none;
        returns their ids (``[]`` for 0). Raises as ``alloc_bulk`` does."""
        if check_count(n) == 0:
            return []
        self._check_room(n)
        with self._lock:
            return self._new_protected(self._change(lambda: self._core.palloc(n)))

    def _new_protected(self, slots: list[int]) -> list[ProtectedPageId]:
        ps, serials = self._ps, self._serials
        for slot in slots:
            self._serial += 1
            serials[slot] = (self._serial, 0)
        return [new_protected_id(s, ps) for s in slots]

    def free_protected(self, ppid: ProtectedPageId) -> None:
        """Free a protected page in one commit. Raises ``TypeError`` for anything but a
        ``ProtectedPageId``, ``PageSizeMismatch``, ``DoubleFree`` for one freed already and
        ``OutOfBounds`` for one never allocated."""
        with self._lock:
            slot = self._freeable_slot(ppid)
            self._change(lambda: self._core.pfree([slot]))
            self._serials.pop(slot, None)

    def free_protected_bulk(self, ids: Iterable[ProtectedPageId]) -> None:
        """Free every id of the iterable in one commit; one bad id (or a duplicate) frees
        nothing. Raises as ``free_protected`` does, and ``DoubleFree`` for a duplicate."""
        ids = list(ids)
        with self._lock:
            slots: list[int] = []
            seen: set[int] = set()
            for ppid in ids:
                slot = self._freeable_slot(ppid)
                if slot in seen:
                    raise DoubleFree(f"protected page {slot} appears twice")
                seen.add(slot)
                slots.append(slot)
            if slots:
                self._change(lambda: self._core.pfree(slots))
                for slot in slots:
                    self._serials.pop(slot, None)

    def protected_writer(self, ppid: ProtectedPageId) -> ProtectedPageWriter:
        """A ``ProtectedPageWriter`` for the page (also ``ppid.get_mut(pager)``): stage, then
        commit. Raises ``TypeError``, ``PageSizeMismatch``, or ``OutOfBounds`` for a protected
        page that is not allocated."""
        with self._lock:
            slot = self._protected_slot(ppid)
            start = self._core.ppage(slot) * self._ps
            content = self._core.mapping()[start : start + self._ps].tobytes()
            return ProtectedPageWriter(self, ppid, self._serials.get(slot, (0, 0)), content)

    def _commit_protected(
        self, ppid: ProtectedPageId, serial: tuple[int, int], content: bytearray
    ) -> None:
        with self._lock:
            slot = self._protected_slot(ppid)
            now = self._serials.get(slot, (0, 0))
            if now[0] != serial[0]:
                raise OutOfBounds(f"protected page {slot} was freed since the writer was made")
            if now[1] != serial[1]:
                raise WriteConflict(
                    f"protected page {slot} was written by another writer since this one was "
                    "made; committing would undo that write (make a new writer)"
                )
            self._change(lambda: self._core.pwrite(slot, content))
            self._serials[slot] = (now[0], now[1] + 1)

    def _freeable_slot(self, ppid: ProtectedPageId) -> int:
        """The slot of a protected page that may be freed: DoubleFree for one freed already
        (every slot below the slot count was allocated once), OutOfBounds beyond."""
        if type(ppid) is not ProtectedPageId or ppid[1] != self._ps:
            raise wrong_handle(ppid, ProtectedPageId)
        self._check_live()
        slot: int = ppid[0]
        if not self._core.pused(slot):
            if slot < self._core.slot_count:
                raise DoubleFree(f"protected page {slot} is already free")
            raise OutOfBounds(f"protected page {slot} was never allocated")
        return slot

    def _change(self, fn: Callable[[], Any]) -> Any:
        """Run one change of the core: its own commit, or part of the open batch (which a
        failure dooms: the core cannot undo one call inside a batch)."""
        try:
            result = fn()
        except BaseException:
            if self._batch_depth:
                self._batch_doomed = True
            raise
        self._version += 1
        return result

    # -- batches -------------------------------------------------------------------------

    @property
    def lock(self) -> threading.RLock:
        """The pager's re-entrant lock. Every call that keeps state beside the file's (the
        protected pages', a batch's, a flush's) holds it, and a ``batch()`` holds it from start
        to end; a structure built on the pager that keeps state of its own holds it around
        each of its calls, as ``SubPageAllocator`` does, so that threads take turns with it."""
        return self._lock

    @property
    def in_batch(self) -> bool:
        """Whether this thread has a ``batch()`` open: its changes wait for the commit. (While
        one thread has a batch open, the other threads' calls wait for it to end.)"""
        return self._batch_thread == threading.get_ident()

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Inside a batch, run ``undo`` if the batch is rolled back (latest registered first):
        for state kept beside the file that must return with the file to the last commit, as
        ``SubPageAllocator`` does. Outside a batch, nothing."""
        if self._batch_thread == threading.get_ident():
            self._undo.append(undo)

    def on_commit(self, then: Callable[[], None]) -> None:
        """Inside a batch, run ``then`` once the batch has committed. Outside a batch,
        nothing."""
        if self._batch_thread == threading.get_ident():
            self._then.append(then)

    @contextmanager
    def batch(self) -> Iterator[Pager]:
        """Everything allocated or freed inside is committed by one commit at the end:
        ``with pager.batch(): ...`` (the block gets the pager itself).

        If an exception leaves the block, none of it is kept. A batch inside a batch joins
        it; an exception leaving the inner block dooms the whole batch, and the outer block's
        clean exit then raises ``RuntimeError``. Other threads' calls wait for the batch to
        end. The commit's own failure (``OSError``) keeps none of it either.
        """
        lock = self._lock
        lock.acquire()  # held to the end: other threads' calls wait rather than join it
        try:
            self._enter_batch()
            try:
                yield self
            except BaseException:
                self._end_batch(failed=True)
                raise
            if self._ending_batch(failed=False):
                self._commit_batch(self._core.commit)
        finally:
            if self._batch_depth == 0:
                self._batch_thread = 0
            lock.release()

    def _enter_batch(self) -> None:
        """One level of a batch begins (holding the lock): the outermost opens the core's."""
        if self._batch_depth == 0:
            self._core.begin()
            self._batch_doomed = False
            self._batch_thread = threading.get_ident()
            self._watch = int(not hasattr(self._core, "fast_write"))
        self._batch_depth += 1

    def _end_batch(self, failed: bool) -> None:
        if self._ending_batch(failed):
            self._commit_batch(self._core.commit)

    def _ending_batch(self, failed: bool) -> bool:
        """One level of the batch ends; True when it was the outermost and it is to commit
        now (the caller commits: here, or off the event loop for ``batch_async``)."""
        if self._batch_depth == 0:  # closed inside the block: close() rolled back
            return False
        self._batch_depth -= 1
        if failed:
            self._batch_doomed = True
        if self._batch_depth:
            return False
        if self._batch_doomed:
            self._abort()
            if not failed:
                raise RuntimeError("the batch was rolled back: an inner batch raised")
            return False
        return True

    def _commit_batch(self, commit: Callable[[], None]) -> None:
        try:
            commit()
        except BaseException:
            self._commit_failed()
            raise
        self._batch_committed()

    def _commit_failed(self) -> None:
        # the core took the batch back (a commit that failed before writing, say for want of
        # disk space), or refuses all use now: either way none of it is kept
        self._rolled_back()

    def _batch_committed(self) -> None:
        self._batch_over()
        self._undo.clear()
        then, self._then = self._then, []
        for fn in then:
            fn()

    def _batch_over(self, in_batch: bool = False) -> None:
        """Once a batch is over (or a record retired): with the pure core, whose kind() cannot
        hear of views, the views' quick path for writable views stays off while a batch is
        open or the record in force vouches for data pages."""
        if not hasattr(self._core, "fast_write"):
            self._watch = int(in_batch or bool(self._core.sealed_runs()))

    def _abort(self) -> None:
        """Return to the last committed state: the core's, then what was registered with
        ``on_rollback`` (latest first)."""
        with suppress(Unavailable):  # a core that refuses all use has nothing to take back
            self._core.rollback()
        self._rolled_back()

    def _rolled_back(self) -> None:
        """What the Python side keeps follows the core back to the last commit."""
        with suppress(MappedPageError):  # a core that refuses all use has no page count
            self._n = self._core.page_count
            self._batch_over()
        self._version += 1
        self._then.clear()
        undo, self._undo = self._undo, []
        for fn in reversed(undo):
            fn()

    # -- durability and snapshots --------------------------------------------------------

    def flush(self, ids: Iterable[PageId] | None = None) -> None:
        """Make data written through views durable: every page, or just the ``PageId``s in
        ``ids``. Raises as ``get_page`` does for a bad id, ``OSError`` when the sync fails.

        Inside a batch, the batch's commit makes them durable, before its record: a batch takes
        at most two barriers however many flushes it holds, and a crash never shows its state
        without the pages it flushed (a rolled-back batch makes them durable as it ends)."""
        if ids is not None:
            ids = list(ids)
        with self._lock:
            if ids is None:
                self._core.flush(None)
                return
            ps = self._ps
            indices: list[int] = []
            for pid in ids:  # the core checks the indices
                if type(pid) is not PageId or pid[1] != ps:
                    raise wrong_handle(pid, PageId)
                indices.append(pid[0])
            if self._batch_thread != threading.get_ident():
                self._core.flush(indices)
                return
            self._core.seal(indices)  # those it allocated and gave no writable view of

    def shrink(self) -> int:
        """Give the free pages at the end of the file back to the file system: the page count
        ends after the last page in use, and the file is truncated to it once the commit that
        says so is durable. Protected pages' content and metadata blocks move down first,
        which takes a commit of its own; each commit is atomic. Returns how many pages the
        file lost (0 when none could go).

        Page numbers never change. Pages a live snapshot may still read stay (they are not
        free for reuse yet), and so do the pages after them. Raises ``ValueError`` inside a
        batch (the batch stays as it was), ``CorruptProtectedDirectory`` when a protected page
        it would move does not match its checksum (nothing changes), ``Unavailable`` once
        closed, ``OSError``. A view of a page freed before and cut now must not be touched
        again (as after any truncation, that is a SIGBUS)."""
        with self._lock:
            if self._batch_thread == threading.get_ident():  # refused before it dooms the batch
                raise ValueError("shrink() commits by itself: it cannot run inside a batch")
            self._n = 0  # the views' quick check asks the core, which waits for the cut
            # the pages that protected content and tree blocks move out of are pending until
            # the commit after the move (the state before must stay whole): the second round
            # cuts them, and commits nothing when the first moved nothing
            lost: int = self._change(self._core.shrink)
            lost += self._change(self._core.shrink)
            self._n = self._core.page_count
            return lost

    def snapshot(self) -> Snapshot:
        """A ``Snapshot`` of the last commit, readable from any thread while this pager goes on
        committing: ``with pager.snapshot() as snap: ...``. Raises ``Unavailable`` once the
        pager is closed."""
        with self._lock:
            self._check_live()
            return Snapshot._of(self._core.snapshot(), self._path)

    def _owns_batch(self) -> bool:
        return self._batch_thread == threading.get_ident()

    def _backup(self, dest: str, progress: Progress | None) -> None:
        # from a snapshot of the last commit: this pager goes on committing meanwhile (from
        # other threads), and the copy holds the lock of nothing but the snapshot
        with self.snapshot() as snap:
            snap._backup(dest, progress)


class ProtectedPages:
    """``pager.protected``: alloc/free/alloc_bulk/free_bulk of protected pages, so that code
    written for any ``BulkPageAllocator`` can allocate them."""

    __slots__ = {"pager": "The Pager whose protected pages these are."}

    def __init__(self, pager: Pager) -> None:
        self.pager = pager

    def alloc(self) -> ProtectedPageId:
        """``pager.alloc_protected()``."""
        return self.pager.alloc_protected()

    def free(self, handle: ProtectedPageId, /) -> None:
        """``pager.free_protected(handle)``."""
        self.pager.free_protected(handle)

    def alloc_bulk(self, n: int, /) -> list[ProtectedPageId]:
        """``pager.alloc_protected_bulk(n)``."""
        return self.pager.alloc_protected_bulk(n)

    def free_bulk(self, ids: Iterable[ProtectedPageId], /) -> None:
        """``pager.free_protected_bulk(ids)``."""
        self.pager.free_protected_bulk(ids)

    def __repr__(self) -> str:
        return f"<protected pages of {self.pager!r}>"
