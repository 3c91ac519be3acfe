"""The interface every core implements: the one boundary between the Python layer and a core.

Two cores implement it: ``_core_c`` (the cffi C core, csrc/) and ``_core_py`` (pure Python).
The Python layer (pager.py and friends) only ever talks to a core through this interface, so it
does not know which one it runs on. Both cores read and write docs/FORMAT.md byte for byte and
make the same allocation decisions, so the same calls produce identical files.

Errors: a core raises the exceptions of ``mappedpages.errors`` itself (``ReservedPage``,
``OutOfBounds``, ``DoubleFree``, ``CorruptSuperblock``, ``CorruptMetadata``,
``CorruptProtectedDirectory``, ``InvalidPageSize``), ``OSError`` (with ``errno``) for
operating-system failures, and ``Unavailable`` once it is closed or after a commit failed
half-way (the file then still holds its last committed state, but this process can no longer
know what the page cache holds). Opening a format-1 file that was never upgraded raises the
module's ``Version1`` (a ``CorruptSuperblock``), which the layer above answers by upgrading.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ._v1 import V1State
from .format import Geometry

BarrierHook = Callable[[str], None]

# what kind() returns: a writer also tells PENDING, a free page a snapshot may still read
FREE, DATA, INTERNAL, PENDING = 0, 1, 2, 3


class Reading(Protocol):
    """What the writer and a snapshot both answer about one state."""

    geometry: Geometry

    @property
    def page_size(self) -> int: ...
    @property
    def page_count(self) -> int:
        """Pages the state covers, reserved pages included."""

    @property
    def free_count(self) -> int:
        """Free pages of the state (pending ones included)."""

    @property
    def data_count(self) -> int: ...
    @property
    def slot_count(self) -> int:
        """Slots the directory has made (protected ids are below it)."""

    @property
    def slots_used(self) -> int: ...
    @property
    def generation(self) -> int:
        """The generation of the commit the state is (for the writer: its last commit)."""

    def kind(self, page: int) -> int:
        """FREE, DATA or INTERNAL (OutOfBounds beyond page_count); a writer's core answers
        PENDING for a free page it may not reuse yet."""

    # A core may also offer ``kind_raw(page)`` for 0 <= page < page_count, as cheap as it can
    # be, for the views' index check: INTERNAL whenever kind() would say so; an answer of
    # INTERNAL or a negative number sends the caller to kind() for the full story. A C core
    # also offers ``fast_kind``: (address of a C function (core, page) -> kind that never waits,
    # negative when it cannot answer now; address of the core; the object that keeps it).

    def scan(self, start: int, limit: int) -> list[int]:
        """Up to ``limit`` data pages ``>= start``, ascending."""

    def pused(self, slot: int) -> bool: ...
    def ppage(self, slot: int) -> int:
        """The page holding protected page ``slot``'s content (OutOfBounds when the slot is
        free); its CRC32C is checked the first time it is asked for."""

    def pscan(self, start: int, limit: int) -> list[int]:
        """Up to ``limit`` slots in use ``>= start``, ascending."""

    def mapping(self) -> memoryview:
        """A view of the whole mapping (writable for a writer, read-only for a snapshot).

        It stays valid for as long as it (or a slice of it) is referenced, even after the
        file grew, the core remapped, or the core was closed.
        """

    def close(self) -> None: ...


class Core(Reading, Protocol):
    """One file open for writing. Created by ``open_core``; not thread-safe (the layer above
    serialises)."""

    @property
    def writable(self) -> bool: ...
    @property
    def file_id(self) -> bytes: ...

    # each call is one commit, unless a batch is open (then nothing is committed until
    # commit()). Indices are validated here: the layer above only checks handle types.
    def alloc(self) -> int: ...
    def alloc_bulk(self, n: int) -> list[int]: ...
    def free(self, page: int) -> None: ...
    def free_bulk(self, pages: Sequence[int]) -> None:
        """Validate every page (range, not internal, in use, unique) before freeing any."""

    def palloc(self, n: int) -> list[int]:
        """``n`` new protected pages (content: zeros)."""

    def pfree(self, slots: Sequence[int]) -> None:
        """Free every slot; all are validated first (in use, unique)."""

    def pwrite(self, slot: int, content: bytes) -> None:
        """Make ``content`` (exactly page_size bytes) the slot's content, in a page no snapshot
        reads."""

    def begin(self) -> None:
        """Open a batch: changes accumulate in memory."""

    def commit(self) -> None:
        """Close the batch and commit its changes in one commit (nothing to do if none)."""

    def rollback(self) -> None:
        """Close the batch and return to the last committed state."""

    def adopt(self) -> None:
        """Make the calling thread the open batch's owner, to commit it off the thread that
        opened it (whose calls then wait for the batch like any other thread's); ValueError
        when no batch is open."""

    def reclaim(self) -> None:
        """Make pending pages that no snapshot can read any longer free to reuse (every
        mutating call does this first)."""

    def shrink(self) -> int:
        """Commit a page count that ends after the last page in use or pending (one commit, a
        checkpoint), then truncate the file to it; returns the pages the file lost. Not inside
        a batch (ValueError)."""

    def checkpoint_now(self) -> None:
        """Commit with a checkpoint (the trees written anew, the log emptied)."""

    def flush(self, pages: Sequence[int] | None = None) -> None:
        """Make writes through views durable: all pages, or just ``pages`` (validated), in one
        barrier."""

    def seal(self, pages: Sequence[int]) -> None:
        """``flush`` for pages that nothing but copying writes reached since the open batch
        allocated them: the batch's record may list them, and they stay sealed until a later
        record is in force (docs/FORMAT.md, "Sealed pages")."""

    def retire(self, page: int, viewing: bool) -> bool:
        """Before ``page`` is written (through a view: ``viewing``): retire the record in
        force if it lists the page (True then); a page the open batch sealed and now views is
        flushed instead. The hook, if any, sees ``"retire"`` before the copy's barrier."""
        ...

    def sealed_runs(self) -> list[tuple[int, int]]:
        """The runs ``(first, count)`` the record in force lists, or ``[]`` when none holds
        a data page: writing a page of them takes ``retire`` first."""
        ...

    def snapshot(self) -> SnapshotCore:
        """A snapshot of the last commit, registered so that this writer keeps it whole."""

    def attach_table(self, table: object) -> None:
        """Keep whole the snapshots registered in this reader table (see _readertable.py)."""

    def set_barrier_hook(self, hook: BarrierHook | None) -> None:
        """Test hook: called with "barrier1"/"barrier2"/"flush" just before each sync."""


class SnapshotCore(Reading, Protocol):
    """The state of one commit, read-only, read lazily from the blocks its record names."""

    @property
    def record_slot(self) -> int:
        """Which record slot (0 or 1) the snapshot's record was read from."""

    def kinds(self, start: int, n: int) -> bytes:
        """``kind(page)`` of pages ``[start, start + n)``, one byte each, in one call."""

    def record_block(self) -> bytes | None:
        """The first block of the snapshot's commit record page as it was read (the writer
        rewrites that slot two commits later); None for a format-1 file, whose metadata pages
        no writer changes any more."""

    def newer(self) -> bool:
        """Whether a newer commit may exist (a cheap look at the other record slot)."""

    def refresh(self) -> bool:
        """Move to the newest commit (a snapshot opened on a file); False when none is newer."""


class CoreModule(Protocol):
    """What a core module exports."""

    NAME: str

    def open_core(
        self, fd: int, page_size: int, *, writable: bool, sync: bool, preallocate: bool
    ) -> Core:
        """Open the file behind ``fd`` as its writer (``page_size`` 0 = take it from the file).

        The caller keeps ownership of ``fd`` (and its lock) and closes it after ``close()``.
        """

    def upgrade_core(self, fd: int, v1: V1State, *, sync: bool, preallocate: bool) -> Core:
        """Upgrade the format-1 file behind ``fd``, whose state ``_v1.load`` read, in one
        commit, and open it as its writer."""

    def open_snapshot(self, fd: int, page_size: int) -> SnapshotCore:
        """A snapshot of the newest commit of the file behind ``fd`` (opened read-only)."""

    def newest_generation(self, fd: int, page_size: int) -> int:
        """The generation of the record in force now."""

    def fence(self) -> None:
        """A full memory fence (for the reader table's registration)."""

    def crc32c(self, data: object, crc: int = 0) -> int: ...
