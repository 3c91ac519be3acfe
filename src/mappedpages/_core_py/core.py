"""The pure core's writer: each method is one public function of the C core
(csrc/mappedpages.h), and like them it checks its state, changes it and commits."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from threading import get_ident
from typing import Any, TypeVar

from .. import format as fmt
from .._v1 import V1State
from ..errors import CorruptMetadata, DoubleFree, ReservedPage
from . import alloc, commit, directory, pending, shrink
from .crc import crc32c
from .open import map_file, open_file, upgrade
from .snapshot import Snapshot
from .state import State, get_bit

T = TypeVar("T")


def _free_one(c: State, page: int) -> None:
    alloc.check_freeable(c, page)
    alloc.release(c, page)


class BatchLock:
    """The core's lock (csrc/core.h, mp__enter): re-entrant, and while a batch is open, held
    back from every thread but the batch's owner, so that their calls wait for the batch to
    end rather than join it. The owner may hand the batch to another thread (``adopt``), as
    an async batch does to commit off the event loop; an RLock held from begin to commit could
    not change hands."""

    __slots__ = ("_cond", "_lock", "_owner")

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._owner = 0  # the thread whose batch is open, 0 when none is

    def __enter__(self) -> None:
        self._lock.acquire()
        owner = self._owner
        if owner and owner != get_ident():
            try:
                while self._owner and self._owner != get_ident():
                    self._cond.wait()
            except BaseException:
                self._lock.release()
                raise

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def own(self) -> None:
        """The calling thread's batch is open (called holding the lock)."""
        self._owner = get_ident()

    def disown(self) -> None:
        """The batch is over (called holding the lock): the waiting threads go on."""
        if self._owner:
            self._owner = 0
            self._cond.notify_all()

    def adopt(self) -> None:
        """Make the calling thread the open batch's owner: the thread that opened it waits
        for it now, like any other."""
        with self._lock:  # the plain lock: the owner's batch is what is being taken over
            if not self._owner:
                raise ValueError("no batch is open")
            self._owner = get_ident()


class PyCore:
    """One file open for writing (see _core_api.Core)."""

    def __init__(
        self,
        fd: int,
        page_size: int,
        writable: bool,
        sync: bool,
        prealloc: bool,
        v1: V1State | None = None,
    ) -> None:
        # Each public method holds the lock, as the C core's functions hold theirs; while a
        # batch is open, other threads' calls wait for it to end instead of joining it.
        self._lock = BatchLock()
        self._c = c = State(fd, writable, sync, prealloc)
        if v1 is None:
            open_file(c, page_size)
        else:
            upgrade(c, v1, fmt.new_file_id())
        self.geometry = c.geo

    # -- properties -----------------------------------------------------------------------

    @property
    def page_size(self) -> int:
        return self._c.ps

    @property
    def page_count(self) -> int:
        self._c.live()
        return self._c.counts.n

    @property
    def free_count(self) -> int:
        self._c.live()
        return self._c.counts.free

    @property
    def data_count(self) -> int:
        return self._c.counts.data

    @property
    def slot_count(self) -> int:
        return self._c.counts.slot_count

    @property
    def slots_used(self) -> int:
        return self._c.counts.slots_used

    @property
    def generation(self) -> int:
        return self._c.gen

    @property
    def checkpoint(self) -> int:
        return self._c.checkpoint

    @property
    def log_bytes(self) -> int:
        return len(self._c.log)

    @property
    def writable(self) -> bool:
        return self._c.writable

    @property
    def file_id(self) -> bytes:
        return self._c.file_id

    # -- regular pages --------------------------------------------------------------------

    def _change(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one mutating call, ``fn(state, *args)`` (the frame of the C core's public
        functions): commit it, or, when it fails outside a batch, take back what it changed."""
        c = self._c
        c.writer()
        if not c.in_batch:
            pending.release(c)
        try:
            result = fn(c, *args)
            commit.autocommit(c)  # a commit that failed before writing left no poison
        except BaseException:
            if not c.in_batch and not c.poisoned:
                alloc.rollback(c)
            raise
        return result

    def alloc(self) -> int:
        with self._lock:
            return self._change(alloc.take_lowest, False)

    def alloc_bulk(self, n: int) -> list[int]:
        with self._lock:
            if n < 0:
                raise ValueError("n must be >= 0")
            if n > fmt.PAGE_LIMIT - self._c.counts.n:
                raise ValueError(f"{n} pages are more than a file can hold")

            def bulk(c: State) -> list[int]:
                free = c.counts.free - len(c.held)  # pending pages are free but not to be had yet
                if n > free:
                    alloc.grow(c, n - free)
                alloc.space_for(c, n)
                return [alloc.take_lowest(c, False) for _ in range(n)]

            return self._change(bulk)

    def free(self, page: int) -> None:
        with self._lock:
            self._change(_free_one, page)

    def free_bulk(self, pages: Sequence[int]) -> None:
        with self._lock:

            def bulk(c: State) -> None:
                seen: set[int] = set()
                for page in pages:
                    alloc.check_freeable(c, page)
                    if page in seen:
                        raise DoubleFree(f"page {page} appears twice")
                    seen.add(page)
                for page in sorted(seen):
                    alloc.release(c, page)

            self._change(bulk)

    def kind(self, page: int) -> int:
        with self._lock:
            self._c.live()
            return alloc.kind(self._c, page)

    def kind_raw(self, page: int) -> int:
        """The views' check, without the lock (see _core_api.Reading): INTERNAL when the
        page's internal bit is set (kind() then tells in full), else DATA. It reads one byte
        of a bitmap, which is atomic under the GIL."""
        internal = self._c.internal
        i = page >> 3
        if i >= len(internal):
            return -1  # the caller's full check explains
        return alloc.INTERNAL if internal[i] >> (page & 7) & 1 else alloc.DATA

    def is_allocated(self, page: int) -> bool:
        """Whether ``page`` is a data page in use."""
        return self.kind(page) == alloc.DATA

    def scan(self, start: int, limit: int) -> list[int]:
        with self._lock:
            self._c.live()
            return alloc.scan(self._c, start, limit)

    # -- protected pages ------------------------------------------------------------------

    def palloc(self, n: int) -> list[int]:
        with self._lock:
            return self._change(lambda c: directory.palloc(c, n))

    def pfree(self, slots: Sequence[int]) -> None:
        with self._lock:
            self._change(lambda c: directory.pfree(c, slots))

    def pwrite(self, slot: int, content: bytes) -> None:
        with self._lock:
            data = bytes(content)
            self._change(lambda c: directory.pwrite(c, slot, data))

    def ppage(self, slot: int) -> int:
        with self._lock:
            self._c.live()
            return directory.ppage(self._c, slot)

    def pused(self, slot: int) -> bool:
        with self._lock:
            self._c.live()
            return directory.is_used(self._c, slot)

    def pscan(self, start: int, limit: int) -> list[int]:
        with self._lock:
            self._c.live()
            return directory.pscan(self._c, start, limit)

    # -- batches and commits --------------------------------------------------------------

    def begin(self) -> None:
        with self._lock:
            alloc.begin(self._c)
            self._lock.own()

    def adopt(self) -> None:
        """Make the calling thread the open batch's owner (to commit it off the thread that
        opened it); ValueError when no batch is open."""
        self._lock.adopt()

    def _end_batch(self) -> None:
        self._lock.disown()

    def commit(self) -> None:
        with self._lock:
            try:
                c = self._c
                c.writer()
                c.in_batch = False
                try:
                    commit.commit(c)
                except BaseException:
                    if not c.poisoned:  # failed before writing: the batch is undone, its
                        with contextlib.suppress(OSError):  # flushes kept
                            commit.sync_flushed(c)
                        alloc.rollback(c)
                    raise
            finally:
                self._end_batch()

    def rollback(self) -> None:
        with self._lock:
            try:
                self._c.live()
                try:
                    commit.sync_flushed(self._c)
                finally:
                    alloc.rollback(self._c)
            finally:
                self._end_batch()

    def reclaim(self) -> None:
        with self._lock:
            c = self._c
            c.writer()
            if not c.in_batch:
                pending.release(c)

    def shrink(self) -> int:
        with self._lock:
            if self._c.in_batch:
                self._c.writer()
                raise ValueError("shrink() commits by itself: it cannot run inside a batch")
            self._c.writer()
            before = fmt.file_size(self._c.fd)
            self._change(shrink.mark_tail)
            return shrink.truncate(self._c, before)

    def checkpoint_now(self) -> None:
        """Make the next commit a checkpoint, and commit."""

        with self._lock:

            def force(c: State) -> None:
                c.force_checkpoint = c.forced = True

            self._change(force)

    # -- the mapping, durability, snapshots -----------------------------------------------

    def mapping(self) -> memoryview:
        with self._lock:
            c = self._c
            c.live()
            view = memoryview(c.mm)
            return view if c.writable else view.toreadonly()

    def flush(self, pages: Sequence[int] | None = None) -> None:
        self._flush(pages, seal=False)

    def seal(self, pages: Sequence[int]) -> None:
        """``flush`` for pages that nothing but copying writes reached since the open batch
        allocated them: its record may list them (alloc.c's mp_seal_pages)."""
        self._flush(pages, seal=True)

    def _flush(self, pages: Sequence[int] | None, seal: bool) -> None:
        with self._lock:
            c = self._c
            c.live()
            for page in pages or ():
                c.check_page(page)
                if page in c.reserved or get_bit(c.internal, page):
                    raise ReservedPage(f"page {page} is internal to the file format")
            if c.in_batch:  # the batch's commit makes them durable, in its first barrier
                if pages is None:
                    c.flush_everything = True
                    return
                seal = seal and c.sync
                sealed = [
                    p
                    for p in pages
                    if seal and p in c.born and p not in c.viewed and alloc.is_data(c, p)
                ]
                c.sealed += sealed
                taken = set(sealed)
                rest = [p for p in pages if p not in taken] if sealed else pages
                if rest:
                    commit.widen_flush(c, min(rest) * c.ps, (max(rest) + 1) * c.ps)
                return
            if c.hook is not None:
                c.hook("flush")
            if pages is None:  # one barrier (docs/DESIGN.md, "Flushing data"), as the C core
                os.fdatasync(c.fd)
            elif pages:  # one msync over the pages' span: one barrier however many pages
                commit.msync(c, [(p * c.ps, c.ps) for p in pages])

    def retire(self, page: int, viewing: bool) -> bool:
        """Before ``page`` is written (through a view, ``viewing``): retire the record in force
        if it lists the page; a page the open batch sealed and now views is flushed instead
        (alloc.c's mp_retire)."""
        with self._lock:
            c = self._c
            c.writer()
            if viewing and c.in_batch and page in c.born:
                c.viewed.add(page)  # not sealed; sealed before: the commit flushes it instead
            if not commit.listed_in_force(c, page):
                return False
            try:
                commit.retire_write(c)
                if c.hook is not None:
                    c.hook("retire")
                commit.retire_sync(c)
            except BaseException:
                c.poisoned = True  # which slot landed is unknown now
                raise
            return True

    def sealed_runs(self) -> list[tuple[int, int]]:
        """The runs the record in force lists, or none when they hold no data page."""
        with self._lock:
            c = self._c
            c.live()
            runs = commit.runs_in_force(c)
            data = any(alloc.is_data(c, p) for first, n in runs for p in range(first, first + n))
            return runs if data else []

    def snapshot(self) -> Snapshot:
        """A snapshot of the last commit, registered so that the writer keeps it whole."""
        with self._lock:
            c = self._c
            c.live()
            alloc.check_length(c)
            gen = pending.pin(c)
            page = c.record_pages[c.rec]
            raw = bytes(c.mm[page * c.ps : page * c.ps + c.geo.block])
            slot = fmt.read_record_slot(raw, c.rec, page, c.geo, len(c.mm), crc32c)
            if slot.header is None or slot.header.generation != gen:
                pending.unpin(c, gen)
                raise CorruptMetadata("the record in force does not read back")
            view = memoryview(c.mm).toreadonly()
            return Snapshot(c.geo, view, slot, release=lambda: pending.unpin(c, gen))

    def attach_table(self, table: object) -> None:
        """The reader table whose snapshots the writer keeps whole (a WriterView)."""
        with self._lock:
            self._c.table = table

    def set_barrier_hook(self, hook: Callable[[str], None] | None) -> None:
        with self._lock:
            self._c.hook = hook

    def close(self) -> None:
        with self._lock:
            c = self._c
            if c.closed:
                return
            try:
                if c.in_batch and not c.poisoned:
                    alloc.rollback(c)
                if c.writable and not c.poisoned:
                    commit.commit(c)
                    os.fdatasync(c.fd)
            finally:
                c.closed = True
                self._end_batch()
                with contextlib.suppress(BufferError):  # views still use it: it lives until they go
                    c.mm.close()


__all__ = ["PyCore", "map_file"]
