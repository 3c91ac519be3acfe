"""Sub-pages: many small fixed-size blocks carved out of the regular pages of a Pager.

The file format knows nothing of sub-pages: a parent page is an ordinary allocated page, and
which of its slots are in use is kept in memory only. That keeps the crash-safety argument
entirely in the Pager (a parent is either allocated or not), at the price that the caller must
remember its own sub-page ids and hand them to ``SubPageAllocator.restore`` after reopening.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable
from contextlib import suppress
from operator import itemgetter
from typing import Any

from .errors import DoubleFree, InvalidPageSize, OutOfBounds, PageSizeMismatch, Unavailable
from .handles import PageId, check_count
from .pager import Pager

__all__ = ["SubPageAllocator", "SubPageId"]

# Continues the kind tags of handles.py (0 page, 1 protected), so that a SubPageId never
# compares equal to another kind of handle even if its leading fields happened to match.
_KIND_SUB = 2

# A parent's used slots are one int bitmask; 64 keeps the masks small ints and bounds the
# waste of a parent that holds a single live sub-page.
_MAX_SLOTS = 64


def _is_power_of_two(n: object) -> bool:
    return type(n) is int and n >= 1 and n & (n - 1) == 0


class SubPageId(tuple):  # type: ignore[type-arg]
    """A sub-page: slot ``slot`` of ``sub_size`` bytes inside the regular page ``parent``.

    A tuple ``(parent, slot, sub_size, kind)`` for the same reasons as ``PageId``: C-speed
    hashing and ordering, and immutability. Ids sort by parent, then slot, which is also the
    order in which the allocator hands them out.
    """

    __slots__ = ()

    def __new__(cls, parent: PageId, slot: int, sub_size: int) -> SubPageId:
        if type(parent) is not PageId:
            raise TypeError(f"a sub-page parent must be a PageId, not {type(parent).__name__}")
        if type(slot) is not int:
            if isinstance(slot, bool) or not isinstance(slot, int):
                raise TypeError(f"a sub-page slot must be an int, not {type(slot).__name__}")
            slot = int(slot)
        if slot < 0:
            raise ValueError(f"sub-page slot {slot} is negative")
        if not _is_power_of_two(sub_size):
            raise InvalidPageSize(f"sub-page size {sub_size!r} is not a power of two")
        return tuple.__new__(cls, (parent, slot, sub_size, _KIND_SUB))

    parent: PageId = property(  # type: ignore[assignment]
        itemgetter(0), doc="The regular page that holds this sub-page."
    )
    slot: int = property(  # type: ignore[assignment]
        itemgetter(1), doc="The position inside the parent, in units of ``sub_size``."
    )
    sub_size: int = property(  # type: ignore[assignment]
        itemgetter(2), doc="The size of the sub-page in bytes."
    )

    def __getnewargs__(self) -> tuple[PageId, int, int]:
        return (self[0], self[1], self[2])

    def __repr__(self) -> str:
        return f"SubPageId({self[0]!r}, slot={self[1]}, sub_size={self[2]})"

    def __copy__(self) -> SubPageId:
        return self

    def __deepcopy__(self, memo: object) -> SubPageId:
        return self

    def get(self, allocator: SubPageAllocator) -> memoryview:
        """Read-only view of this sub-page in ``allocator``."""
        return allocator.get(self)

    def get_mut(self, allocator: SubPageAllocator) -> memoryview:
        """Writable view of this sub-page in ``allocator``."""
        return allocator.get_mut(self)


def _new_sub_id(parent: PageId, slot: int, sub_size: int, _new: Any = tuple.__new__) -> SubPageId:
    """Make a SubPageId without validation, for slots that come from the allocator itself."""
    return _new(SubPageId, (parent, slot, sub_size, _KIND_SUB))  # type: ignore[no-any-return]


# a parent as it was before a change in a batch: index, slot mask and handle (None: no parent)
_Saved = tuple[int, int | None, PageId | None]


def _low_slots(mask: int, count: int) -> list[int]:
    """The ``count`` lowest clear bits of ``mask``; callers never ask for more than are free."""
    out: list[int] = []
    free = ~mask
    while len(out) < count:
        low = free & -free
        out.append(low.bit_length() - 1)
        free ^= low
    return out


class SubPageAllocator:
    """Hands out ``sub_size``-byte sub-pages, taking parent pages from ``pager`` as needed.

    Parents are allocated with ``pager.alloc`` and freed back to the pager as soon as their
    last sub-page is freed, so the pager's own accounting always covers every live sub-page.
    Which slots are in use lives in memory only (see ``restore``). Inside a ``pager.batch()``
    the allocator notes what it changes, so that a batch rolled back takes the allocator back
    with the file: its parents are again exactly the pages the pager has for it.

    ``SubPageAllocator(pager, sub_size)`` raises ``TypeError`` unless ``pager`` is a ``Pager``,
    ``Unavailable`` for a closed one, and ``InvalidPageSize`` unless ``sub_size`` is a power of
    two smaller than the page with at most 64 sub-pages to a page.
    """

    __slots__ = (
        "__weakref__",
        "_avail",
        "_born",
        "_ever",
        "_full",
        "_held",
        "_in_batch",
        "_in_heap",
        "_pager",
        "_parents",
        "_ps",
        "_releasing",
        "_slots",
        "_sub",
        "_used",
    )

    _pager: Pager | None
    _sub: int
    _ps: int
    _slots: int
    _full: int
    _used: dict[int, int]  # parent index -> bitmask of its slots in use; a held parent is never 0
    _parents: dict[int, PageId]  # parent index -> its handle, to free it without rebuilding one
    # Parents that may have a free slot, lowest first. Entries go stale (the parent filled up or
    # was freed) and are dropped lazily when they reach the top; _in_heap mirrors the heap's
    # contents so that a parent is never pushed twice.
    _avail: list[int]
    _in_heap: set[int]
    # Inside a pager.batch() (dropped when it ends): slots allocated in the batch, and slots
    # freed in it that were live when it began. Those are held, still set in _used, until the
    # commit, as the pager holds pages: a rollback must find their content as it was.
    _born: dict[int, int]
    _held: dict[int, int]
    _in_batch: bool
    # one bit per page that has ever been a parent here: freeing a sub-page of one that is no
    # longer is a DoubleFree, of any other an OutOfBounds
    _ever: bytearray
    # parents being given back to the pager by this allocator itself (not "in use" then)
    _releasing: frozenset[int]

    def __init__(self, pager: Pager, sub_size: int) -> None:
        if not isinstance(pager, Pager):
            raise TypeError(f"expected a Pager, got {type(pager).__name__}")
        pager._check_live()
        ps = pager.page_size
        if not _is_power_of_two(sub_size):
            raise InvalidPageSize(f"sub-page size {sub_size!r} is not a power of two")
        if sub_size >= ps:
            raise InvalidPageSize(f"sub-page size {sub_size} is not smaller than the page ({ps})")
        if ps // sub_size > _MAX_SLOTS:
            raise InvalidPageSize(
                f"sub-page size {sub_size} gives {ps // sub_size} slots per page; "
                f"at most {_MAX_SLOTS} are allowed (use a sub-page size >= {ps // _MAX_SLOTS})"
            )
        self._pager = pager
        self._sub = sub_size
        self._ps = ps
        self._slots = ps // sub_size
        self._full = (1 << self._slots) - 1
        self._used = {}
        self._parents = {}
        self._avail = []
        self._in_heap = set()
        self._born = {}
        self._held = {}
        self._in_batch = False
        self._ever = bytearray()
        self._releasing = frozenset()
        pager.add_free_check(self._holds)

    @classmethod
    def restore(cls, pager: Pager, sub_size: int, ids: Iterable[SubPageId]) -> SubPageAllocator:
        """Rebuild an allocator whose live sub-pages are exactly ``ids``; returns it.

        The file only records that the parents are allocated, so the caller's own record of
        its sub-pages is the only source of the slot masks. Nothing is allocated or freed:
        allocated parents that ``ids`` does not mention stay the caller's business. Raises
        as the constructor does, ``TypeError``/``PageSizeMismatch`` for an id of another kind
        or size, ``OutOfBounds`` for an id whose parent is not an allocated page, and
        ``DoubleFree`` for an id listed twice.
        """
        self = cls(pager, sub_size)
        try:
            self._restore(ids)
        except BaseException:
            pager.remove_free_check(self._holds)
            raise
        return self

    def _restore(self, ids: Iterable[SubPageId]) -> None:
        pager = self._live()
        used = self._used
        parents = self._parents
        for sid in ids:
            index, bit = self._locate(sid)
            if index not in used:
                parent = sid[0]
                pager.get_page(parent)  # a data page inside the file, or it raises
                if not pager.is_allocated(parent):
                    raise OutOfBounds(f"parent {parent!r} of {sid!r} is not an allocated page")
                used[index] = 0
                parents[index] = parent
                self._mark(index)
            if used[index] & bit:
                raise DoubleFree(f"{sid!r} is listed twice")
            used[index] |= bit
        full = self._full
        self._avail = [index for index, mask in used.items() if mask != full]
        heapq.heapify(self._avail)
        self._in_heap = set(self._avail)

    # -- properties ----------------------------------------------------------------------

    @property
    def pager(self) -> Pager:
        """The pager the parent pages come from."""
        return self._live()

    @property
    def sub_size(self) -> int:
        """The size of each sub-page in bytes."""
        return self._sub

    @property
    def page_size(self) -> int:
        """The page size of the pager, and of every parent page."""
        return self._ps

    @property
    def slots_per_page(self) -> int:
        """How many sub-pages one parent page holds: ``page_size // sub_size`` (at most 64)."""
        return self._slots

    def __repr__(self) -> str:
        if self._pager is None:
            state = "released"
        else:
            live = sum(bin(self._live_slots(i)).count("1") for i in self._used)
            state = f"parents={len(self._used)} used={live}"
        return f"<SubPageAllocator sub_size={self._sub} page_size={self._ps} {state}>"

    def into_pager(self) -> Pager:
        """Give the pager back and return it; the allocator raises ``Unavailable`` from then
        on, and the pager frees the parents like any page again."""
        with self._lock:
            pager = self._live()
            pager.remove_free_check(self._holds)
            self._pager = None
            self._used = {}
            self._parents = {}
            self._avail = []
            self._in_heap = set()
            self._born = {}
            self._held = {}
            self._in_batch = False
            return pager

    # -- internals -----------------------------------------------------------------------

    @property
    def _lock(self) -> threading.RLock:
        """The pager's lock (``pager.lock``), held by every call: the allocator's state changes
        with the pager's, and another thread's batch, which holds it, keeps them out too.
        Asked for each time, since a forked child's pager has a new one."""
        return self._live().lock

    def _holds(self, index: int) -> bool:
        """Whether page ``index`` is a parent here (the pager then refuses to free it)."""
        return index in self._used and index not in self._releasing

    def _mark(self, index: int) -> None:
        ever = self._ever
        if index >> 3 >= len(ever):
            ever.extend(bytes((index >> 3) + 1 - len(ever)))
        ever[index >> 3] |= 1 << (index & 7)

    def _give_back(self, pager: Pager, pids: list[PageId]) -> None:
        """Free parents through the pager, which asks ``_holds`` first."""
        self._releasing = frozenset(pid[0] for pid in pids)
        try:
            pager.free_bulk(pids)
        finally:
            self._releasing = frozenset()

    def _live(self) -> Pager:
        pager = self._pager
        if pager is None:
            raise Unavailable("the SubPageAllocator gave its pager back with into_pager()")
        pager._check_live()  # a slot it has at hand is no answer once the pager is closed
        return pager

    def _locate(self, sid: object) -> tuple[int, int]:
        """Parent index and slot bit of a well-formed id of this allocator; not checked as used."""
        if type(sid) is not SubPageId:
            raise TypeError(f"expected a SubPageId, got {type(sid).__name__}")
        parent: PageId = sid[0]
        if sid[2] != self._sub or parent[1] != self._ps:
            raise PageSizeMismatch(
                f"{sid!r} does not belong to an allocator of sub-page size {self._sub} "
                f"on pages of {self._ps} bytes"
            )
        slot: int = sid[1]
        if slot >= self._slots:
            raise OutOfBounds(f"{sid!r}: slot beyond the {self._slots} slots of a page")
        return parent[0], 1 << slot

    def _used_slot(self, sid: object) -> PageId:
        """The parent of a sub-page that is allocated here; OutOfBounds for anything else."""
        self._live()
        index, bit = self._locate(sid)
        if not self._live_slots(index) & bit:
            raise OutOfBounds(f"{sid!r} is not allocated")
        return self._parents[index]

    def _live_slots(self, index: int) -> int:
        """The slots of parent ``index`` that are allocated (not free, nor held)."""
        return self._used.get(index, 0) & ~self._held.get(index, 0)

    def _freeable(self, sid: SubPageId) -> tuple[int, int]:
        """Parent index and slot bit of a sub-page that may be freed; raises otherwise."""
        index, bit = self._locate(sid)
        mask = self._used.get(index)
        if mask is None:
            ever = self._ever
            if index >> 3 < len(ever) and ever[index >> 3] >> (index & 7) & 1:
                raise DoubleFree(f"{sid!r} is already free")
            raise OutOfBounds(f"{sid!r} was never allocated here")
        if not mask & bit or (self._held and self._held.get(index, 0) & bit):
            raise DoubleFree(f"{sid!r} is already free")
        return index, bit

    def _lowest_available(self) -> int | None:
        heap = self._avail
        used = self._used
        full = self._full
        while heap:
            index = heap[0]
            mask = used.get(index)
            if mask is not None and mask != full:
                return index
            heapq.heappop(heap)
            self._in_heap.discard(index)
        return None

    def _offer(self, index: int) -> None:
        """Note that ``index`` may have a free slot again."""
        if index not in self._in_heap:
            self._in_heap.add(index)
            heapq.heappush(self._avail, index)

    # -- batches -------------------------------------------------------------------------

    def _saved(self, pager: Pager, indices: Iterable[int]) -> list[_Saved]:
        """Inside a batch, these parents as they are now, for ``_remember``; else nothing."""
        if not pager.in_batch:
            return []
        used, parents = self._used, self._parents
        return [(index, used.get(index), parents.get(index)) for index in indices]

    def _remember(self, pager: Pager, saved: list[_Saved], born: Iterable[SubPageId] = ()) -> None:
        """Inside a batch: if it is rolled back, put these parents back as ``saved`` has them
        (the first change of a parent in the batch saved it as it was when the batch began),
        and note the sub-pages ``born`` in it (freeing one of those holds nothing)."""
        if not pager.in_batch:
            return
        born_masks = self._born
        for sid in born:
            index = sid[0][0]
            born_masks[index] = born_masks.get(index, 0) | 1 << sid[1]
        if not self._in_batch:
            self._in_batch = True
            pager.on_commit(self._batch_committed)
            pager.on_rollback(self._batch_ended)  # runs last: rollbacks run latest first

        def undo() -> None:
            if self._pager is None:  # given back meanwhile: nothing left to restore
                return
            used, parents = self._used, self._parents
            for index, mask, pid in reversed(saved):
                if mask is None or pid is None:
                    used.pop(index, None)
                    parents.pop(index, None)
                else:
                    used[index] = mask
                    parents[index] = pid
                    self._offer(index)

        pager.on_rollback(undo)

    def _batch_committed(self) -> None:
        """The batch committed: what it freed may be handed out now."""
        used = self._used
        for index, bits in self._held.items():
            if index in used:
                used[index] &= ~bits
                self._offer(index)
        self._batch_ended()

    def _batch_ended(self) -> None:
        self._born = {}
        self._held = {}
        self._in_batch = False

    def _drop_slots(self, pager: Pager, index: int, bits: int) -> bool:
        """Free ``bits`` of parent ``index`` in memory, holding those the committed state may
        use; False (and nothing changed) when no live slot would be left: the caller gives the
        parent back to the pager and then calls ``_drop_parent``."""
        held = self._held.get(index, 0)
        born = self._born.get(index, 0)
        if pager.in_batch:
            held |= bits & ~born
        mask = self._used[index] & ~bits | held
        if not mask & ~held:
            return False
        self._used[index] = mask
        self._set(self._held, index, held)
        self._set(self._born, index, born & ~bits)
        self._offer(index)
        return True

    def _drop_parent(self, index: int) -> None:
        del self._used[index]
        del self._parents[index]
        self._held.pop(index, None)
        self._born.pop(index, None)

    @staticmethod
    def _set(masks: dict[int, int], index: int, mask: int) -> None:
        if mask:
            masks[index] = mask
        else:
            masks.pop(index, None)

    def _take_parents(self, pids: list[PageId], count: int) -> list[SubPageId]:
        """Fill fresh parents ``pids`` with ``count`` sub-pages, lowest slots first."""
        used = self._used
        slots = self._slots
        sub = self._sub
        out: list[SubPageId] = []
        for pid in pids:
            take = min(slots, count - len(out))
            index = pid[0]
            used[index] = (1 << take) - 1
            self._parents[index] = pid
            self._mark(index)
            out.extend(_new_sub_id(pid, slot, sub) for slot in range(take))
            if take < slots:
                self._offer(index)
        return out

    # -- allocation ----------------------------------------------------------------------

    def alloc(self) -> SubPageId:
        """One sub-page from the lowest parent with room, or from a new parent; returns its
        ``SubPageId``. Raises as ``pager.alloc`` does; ``Unavailable`` after
        ``into_pager()`` or once the pager is closed."""
        with self._lock:
            pager = self._live()
            index = self._lowest_available()
            if index is None:
                pid = pager.alloc()
                saved: list[_Saved] = [(pid[0], None, None)]
                sid = self._take_parents([pid], 1)[0]
            else:
                saved = self._saved(pager, [index]) if pager.in_batch else []
                mask = self._used[index]
                low = ~mask & (mask + 1)
                self._used[index] = mask | low
                sid = _new_sub_id(self._parents[index], low.bit_length() - 1, self._sub)
            if pager.in_batch:
                self._remember(pager, saved, [sid])
            return sid

    def alloc_bulk(self, n: int) -> list[SubPageId]:
        """``n`` sub-pages, as a list (``[]`` for 0); the new parents they need come from one
        ``pager.alloc_bulk``.

        Raises as ``pager.alloc_bulk`` does; on failure the allocator and the pager are left
        as they were.
        """
        with self._lock:
            pager = self._live()
            check_count(n)
            used = self._used
            sub = self._sub
            out: list[SubPageId] = []
            touched: list[tuple[int, int]] = []  # (parent index, mask before this call)
            fresh: list[PageId] = []
            try:
                while len(out) < n:
                    index = self._lowest_available()
                    if index is None:
                        break
                    mask = used[index]
                    slots = _low_slots(mask, min(n - len(out), self._slots - bin(mask).count("1")))
                    touched.append((index, mask))
                    for slot in slots:
                        mask |= 1 << slot
                    used[index] = mask
                    parent = self._parents[index]
                    out.extend(_new_sub_id(parent, slot, sub) for slot in slots)
                need = n - len(out)
                if need:
                    fresh = pager.alloc_bulk(-(-need // self._slots))
                    out.extend(self._take_parents(fresh, need))
            except BaseException:
                for index, mask in reversed(touched):
                    used[index] = mask
                    self._offer(index)
                for pid in fresh:
                    used.pop(pid[0], None)
                    self._parents.pop(pid[0], None)
                if fresh:
                    # If the pager refuses this too, it is failing as a whole: the error that made
                    # this call fail is the one worth reporting, and the parents are merely leaked.
                    with suppress(Exception):
                        pager.free_bulk(fresh)
                raise
            parents = self._parents
            saved = [(index, mask, parents[index]) for index, mask in touched]
            self._remember(pager, saved + [(pid[0], None, None) for pid in fresh], out)
            return out

    # -- freeing -------------------------------------------------------------------------

    def free(self, sid: SubPageId) -> None:
        """Free one sub-page; its parent goes back to the pager if it was the last one.

        Raises ``TypeError`` for anything but a ``SubPageId``, ``PageSizeMismatch`` for one of
        another sub-page or page size, ``DoubleFree`` for one freed already and
        ``OutOfBounds`` for one never allocated here.
        """
        with self._lock:
            pager = self._live()
            index, bit = self._freeable(sid)
            if pager.in_batch or self._held:
                saved = self._saved(pager, [index])
                if not self._drop_slots(pager, index, bit):
                    # first: if it refuses, nothing changed here
                    self._give_back(pager, [self._parents[index]])
                    self._drop_parent(index)
                self._remember(pager, saved)
                return
            mask = self._used[index] ^ bit  # outside a batch nothing is held: the short way
            if mask:
                self._used[index] = mask
                self._offer(index)
            else:
                # The pager goes first: if it refuses, the sub-page is still allocated here too.
                self._give_back(pager, [self._parents[index]])
                del self._used[index]
                del self._parents[index]

    def free_bulk(self, ids: Iterable[SubPageId]) -> None:
        """Free every id; one bad id or a duplicate frees nothing (raises as ``free`` does,
        ``DoubleFree`` for a duplicate).

        Parents left empty go back to the pager in one ``pager.free_bulk``.
        """
        with self._lock:
            pager = self._live()
            freeing: dict[int, int] = {}  # parent index -> bits to clear
            for sid in list(ids):
                index, bit = self._freeable(sid)
                bits = freeing.get(index, 0)
                if bits & bit:
                    raise DoubleFree(f"{sid!r} is listed twice")
                freeing[index] = bits | bit
            emptied = [i for i, bits in freeing.items() if not self._live_slots(i) & ~bits]
            saved = self._saved(pager, freeing)
            if emptied:
                self._give_back(pager, [self._parents[index] for index in emptied])
            for index, bits in freeing.items():
                if not self._drop_slots(pager, index, bits):
                    self._drop_parent(index)
            self._remember(pager, saved)

    # -- views ---------------------------------------------------------------------------

    def get(self, sid: SubPageId) -> memoryview:
        """Read-only ``memoryview`` of ``sub_size`` bytes, straight into the mapping. Raises
        ``TypeError``/``PageSizeMismatch`` for an id of another kind or size and
        ``OutOfBounds`` for one not allocated here."""
        with self._lock:
            parent = self._used_slot(sid)
            start = sid[1] * self._sub
            return self._live().get_page(parent)[start : start + self._sub]

    def get_mut(self, sid: SubPageId) -> memoryview:
        """Writable ``memoryview`` of ``sub_size`` bytes; ``pager.flush`` makes what is written
        durable. Raises as ``get`` does."""
        with self._lock:
            parent = self._used_slot(sid)
            start = sid[1] * self._sub
            return self._live().get_page_mut(parent)[start : start + self._sub]
