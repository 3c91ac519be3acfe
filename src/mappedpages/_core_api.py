"""The interface every core implements: the one boundary between the Python layer and a core.

Two cores implement it: ``_core_c`` (the cffi C core, csrc/) and ``_core_py`` (pure Python).
The Python layer (pager.py and friends) only ever talks to a core through this interface, so it
does not know which one it runs on. Both cores read and write docs/FORMAT.md byte for byte and
make the same allocation decisions, so the same calls produce identical files.

Errors: a core raises the exceptions of ``mappedpages.errors`` itself (``ReservedPage``,
``OutOfBounds``, ``DoubleFree``, ``CorruptSuperblock``, ``CorruptMetadata``,
``InvalidPageSize``), ``OSError`` (with ``errno``) for operating-system failures, and
``Unavailable`` once it is closed or after a commit failed half-way (the file then still holds
its last committed state, but this process can no longer know what the page cache holds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from .format import Geometry

BarrierHook = Callable[[str], None]


class Core(Protocol):
    """One open file. Created by ``open_core``; not thread-safe (the layer above serialises)."""

    geometry: Geometry

    @property
    def page_size(self) -> int: ...
    @property
    def page_count(self) -> int:
        """Pages the current (possibly uncommitted) state covers, reserved pages included."""

    @property
    def free_count(self) -> int:
        """Free data pages in the current state."""

    @property
    def generation(self) -> int:
        """Generation of the last commit."""

    @property
    def active(self) -> int:
        """0 when metadata copy A is active, 1 for B."""

    @property
    def writable(self) -> bool: ...

    # allocation: each call is one commit, unless a batch is open (then nothing is committed
    # until commit()). Indices are validated here: the layer above only checks handle types.
    def alloc(self) -> int: ...
    def alloc_bulk(self, n: int) -> list[int]: ...
    def free(self, page: int) -> None: ...
    def free_bulk(self, pages: Sequence[int]) -> None:
        """Validate every page (range, not internal, allocated, unique) before freeing any."""

    def begin(self) -> None:
        """Open a batch: changes accumulate in memory."""

    @property
    def directory(self) -> tuple[int, int]:
        """Pages of the two copies of the protected-page directory index, (0, 0) for none."""

    def set_directory(self, dir_a: int, dir_b: int) -> None:
        """Record the directory index pages; the next commit writes them into the metadata."""

    @property
    def log(self) -> bytes:
        """The log the commit record carries: as last committed, or as set for the next one."""

    def set_log(self, data: bytes) -> None:
        """The log every following commit record carries (<= 220 bytes, a multiple of 4).

        The core does not interpret it; the protected-page directory keeps its changes there.
        The next commit happens even if nothing else changed; a rollback restores the
        committed log.
        """

    def two_barriers(self) -> None:
        """The next commit takes two barriers even if it could take one.

        For a commit that writes a page which does not become current (the zeroed header of a
        new block's second copy): a one-barrier record could only list pages that stay as they
        are while it is the newest.
        """

    def stage(self, pages: Sequence[int]) -> None:
        """Pages the layer above wrote into the mapping for the next commit (whole pages).

        The commit makes them durable at its first barrier, and happens even if no allocation
        bit changed. The layer above writes only pages the committed state does not use.
        """

    def commit(self) -> None:
        """Close the batch and commit its changes in one commit (nothing to do if none)."""

    def rollback(self) -> None:
        """Close the batch and return to the last committed state."""

    def is_allocated(self, page: int) -> bool:
        """Bit of ``page`` (OutOfBounds beyond page_count)."""

    def scan(self, start: int, limit: int) -> list[int]:
        """Up to ``limit`` allocated data pages ``>= start``, ascending; internal pages excluded."""

    def bitmap(self) -> bytes:
        """The whole in-memory bitmap, bits [0, page_count), as bytes."""

    def mapping(self) -> memoryview:
        """A writable (read-only for a read-only core) view of the current whole mapping.

        The view stays valid for as long as it (or a slice of it) is referenced, even after the
        file grew, the core remapped, or the core was closed.
        """

    def flush(self, pages: Sequence[int] | None = None) -> None:
        """Make writes through views durable: all pages, or just ``pages`` (validated)."""

    def set_barrier_hook(self, hook: BarrierHook | None) -> None:
        """Test hook: called with "barrier1"/"barrier2"/"flush" just before each sync."""

    def close(self) -> None:
        """Flush (if sync was off), unmap what no view uses, release the core. Idempotent."""


class CoreModule(Protocol):
    """What a core module exports."""

    NAME: str

    def open_core(
        self, fd: int, page_size: int, *, writable: bool, sync: bool, preallocate: bool
    ) -> Core:
        """Open the file behind ``fd`` (``page_size`` 0 = take it from the file).

        The caller keeps ownership of ``fd`` (and its lock) and closes it after ``close()``.
        """

    def crc32c(self, data: object, crc: int = 0) -> int: ...
