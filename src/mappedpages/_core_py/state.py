"""The writer's state in memory (mirrors ``struct mp_core`` in csrc/core.h).

The pure core is written as the C core is: plain functions over this state, one module per C
source file (``alloc.py`` for alloc.c, ``commit.py`` for commit.c, and so on), so that the two
can be read side by side.
"""

from __future__ import annotations

import mmap
import threading
from array import array
from collections import deque
from collections.abc import Callable

from .. import format as fmt
from ..errors import OutOfBounds, Unavailable

Pointer = tuple[int, int]  # page, CRC32C
NULL: Pointer = (0, 0)


class Tree:
    """One tree's blocks as the last checkpoint wrote them: leaf index or (level, index) ->
    pointer, for every block that is not null."""

    __slots__ = ("dirty", "height", "leaves", "nodes")

    def __init__(self) -> None:
        self.height = 0
        self.leaves: dict[int, Pointer] = {}
        self.nodes: dict[tuple[int, int], Pointer] = {}
        self.dirty: set[int] = set()  # leaves changed since the last checkpoint

    def root(self) -> Pointer:
        if self.height == 0:
            return self.leaves.get(0, NULL)
        return self.nodes.get((self.height, 0), NULL)


class State:
    """A writer's open file."""

    def __init__(self, fd: int, writable: bool, sync: bool, prealloc: bool) -> None:
        self.fd = fd
        self.writable = writable
        self.sync = sync
        self.prealloc = prealloc
        self.hook: Callable[[str], None] | None = None
        self.closed = False
        self.poisoned = False
        self.in_batch = False

        self.geo = fmt.Geometry(fmt.MIN_PAGE_SIZE)
        self.ps = 0
        self.mm: mmap.mmap = None  # type: ignore[assignment]  # set by open
        self.record_pages = (1, 2)
        self.reserved: frozenset[int] = frozenset((0, 1, 2))
        self.file_id = b""

        # the last commit
        self.gen = 0
        self.rec = 0  # record slot of the last commit (the next commit writes the other)
        self.checkpoint = 0
        self.committed = Counts()

        # the current state
        self.counts = Counts()
        self.taken = bytearray()  # used pages, and pending ones: what allocation skips
        self.internal = bytearray()
        self.pending = bytearray()  # free pages that may not be reused yet
        self.held: dict[int, int] = {}  # pending page -> generation that freed it
        self.fifo: deque[tuple[int, int]] = deque()  # (generation, page), oldest first
        self.born: set[int] = set()  # pages allocated since the last commit
        self.hint = 0  # no free page below this byte of ``taken``
        self.space_from = 0  # pages from here on may be holes: reserved before use (alloc.py)
        self.tight = False  # the file system was nearly full at the last look (alloc.py)
        self.written = bytearray()  # pages written with zeros in this open, to give them space

        self.slot_page = array("Q")
        self.slot_crc = array("I")
        self.slot_bits = bytearray()
        self.slot_hint = 0
        self.verified = bytearray()  # slots whose content matched its CRC32C in this open

        self.bitmap = Tree()
        self.directory = Tree()

        # the log the next record carries: the committed words, then this commit's
        self.log = bytearray()
        self.log_committed = 0
        self.log_crc_committed = 0
        self.words_start = -1  # where this commit's words begin, -1 before its GEN word
        self.undo_slots: list[tuple[int, int, int]] = []  # (slot, page, crc) before a SLOT
        self.undo_dirty: list[tuple[Tree, int]] = []  # leaves this commit made dirty

        # the commit in progress
        self.staged: list[int] = []  # pages written for it besides tree blocks and the record
        self.blocks: list[int] = []  # tree blocks a checkpoint wrote
        self.grew = False
        self.forced = False  # commit even if nothing changed
        self.force_checkpoint = False  # the next commit writes the trees
        self.checkpointed = False  # the commit in progress is a checkpoint
        self.cut = False  # a shrink: the state ends after its last page in use (alloc.cut)
        self.no_undo = False  # a checkpoint began to write: a failure now cannot be rolled back
        # the open batch's flushes, which its commit makes durable before its record (or its
        # rollback, at once): the byte span of flush(ids), and whether flush() of everything
        self.flush_lo = self.flush_hi = 0  # flush_hi 0: none
        self.flush_everything = False
        # pages the open batch allocated and flushed that nothing but a copying write reached
        # (PyCore.seal): its record may list them, and the commit take one barrier
        self.sealed: list[int] = []
        self.listing: list[tuple[int, int]] = []  # a one-barrier commit's runs (write step)
        self.viewed: set[int] = set()  # pages born in this batch that a writable view was given of
        self.next_log_crc = 0

        # snapshots: generation -> count, in this process; the reader table of other ones
        self.pins: dict[int, int] = {}
        self.pins_lock = threading.Lock()  # snapshots are released from any thread
        self.table: object | None = None  # a pending.TableView

    # -- checks ---------------------------------------------------------------------------

    def live(self) -> None:
        if self.closed:
            raise Unavailable("the pager is closed")
        if self.poisoned:
            raise Unavailable("a commit failed; reopen the file")

    def writer(self) -> None:
        self.live()
        if not self.writable:
            raise Unavailable("the file is open read-only")

    def check_page(self, page: int) -> None:
        if not 0 <= page < self.counts.n:
            raise OutOfBounds(f"page {page} is beyond the file ({self.counts.n} pages)")


class Counts:
    """The counters of a state (the record's header fields that are not pointers)."""

    __slots__ = ("data", "free", "n", "slot_count", "slots_used")

    def __init__(self) -> None:
        self.n = 0
        self.free = 0
        self.data = 0
        self.slot_count = 0
        self.slots_used = 0

    def copy(self) -> Counts:
        c = Counts()
        c.n, c.free, c.data = self.n, self.free, self.data
        c.slot_count, c.slots_used = self.slot_count, self.slots_used
        return c


def get_bit(bits: bytearray, i: int) -> bool:
    return bool(bits[i >> 3] >> (i & 7) & 1)


def set_bit(bits: bytearray, i: int) -> None:
    bits[i >> 3] |= 1 << (i & 7)


def clear_bit(bits: bytearray, i: int) -> None:
    bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
