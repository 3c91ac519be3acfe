"""An independent reader of the file format that verifies every checksum and invariant.

It shares no code with the cores beyond format.py (the layouts) and a CRC32C function, so it
doubles as an oracle for the tests: whatever a core writes must pass it. It reads the file
with ``pread`` and never maps it, so it can look at a file another process is writing.

What it reports (docs/DESIGN.md, "Damage"): a *problem* is damage to the state of the newest
record that is in force (any block, entry, content page or count), or to page 0; a *note* is
what a crash leaves and nothing can tell from damage: a record slot that does not read, or a
one-barrier commit whose pages did not all land. ``ok`` means no problems.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from . import format as fmt
from .errors import CorruptMetadata, CorruptSuperblock, InvalidPageSize

Crc = fmt.Crc32c

_U64 = struct.Struct("<Q")


@dataclass
class Report:
    """What ``check_file`` found. ``ok`` is true only when ``problems`` is empty."""

    path: str
    file_size: int = 0
    page_size: int = 0
    format_version: int = 0
    page_count: int = 0
    free_count: int = 0
    allocated_data_pages: int = 0
    generation: int = 0
    record: int = -1  # the record slot in force, -1 for none
    checkpoint: int = 0
    log_words: int = 0
    tree_blocks: int = 0
    pending_pages: int = 0
    protected_pages: int = 0
    internal_pages: int = 0
    records: list[str] = field(default_factory=list)  # what each record slot holds
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # recoverable states, not problems
    upgraded: bool = False  # a format-1 file upgraded in place

    @property
    def ok(self) -> bool:
        return not self.problems


class _Fatal(Exception):
    pass


def check_file(
    path: str, crc32c: Crc, progress: Callable[[int, int], None] | None = None
) -> Report:
    """Read ``path`` and verify it; never raises for file content (OSError for I/O).

    A writer may be committing meanwhile: a check that finds problems while a commit landed is
    done again, and says so if that keeps happening.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for _ in range(50):
            before = _records_mark(fd)
            report = Report(path)
            try:
                _check(fd, report, crc32c, progress)
            except _Fatal as exc:
                report.problems.append(str(exc))
            if report.ok or _records_mark(fd) == before:
                return report
        report.problems.append(
            "a writer committed during each of 50 checks: the problems above may come from "
            "reading a file that was changing"
        )
        return report
    finally:
        os.close(fd)


def _records_mark(fd: int) -> bytes:
    """Bytes that change whenever a commit lands: the headers of both record slots."""
    try:
        head = os.pread(fd, 64, 0)
        ps = int.from_bytes(head[12:16], "little") or 1024
        return b"".join(os.pread(fd, 32, p * ps) for p in (1, 2)) + os.pread(fd, 1536, 0)
    except OSError:
        return b""


def _read(fd: int, offset: int, size: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise _Fatal(f"file ends inside the range {offset}..{offset + size}")
    return data


def _check(fd: int, r: Report, crc32c: Crc, progress: Callable[[int, int], None] | None) -> None:
    r.file_size = os.fstat(fd).st_size
    try:
        header = fmt.Header(fd, 0, crc32c)
    except fmt.Version1:
        r.format_version = 1
        _check_v1(fd, r, crc32c)
        return
    except CorruptSuperblock as exc:
        raise _Fatal(str(exc)) from None
    except InvalidPageSize as exc:  # not possible with wanted 0
        raise _Fatal(str(exc)) from None
    r.format_version = 2
    r.upgraded = header.version == fmt.V1_VERSION
    ps = r.page_size = header.page_size
    geo = fmt.Geometry(ps)
    if not r.upgraded and any(_read(fd, 64, min(ps, 4096) - 64)):
        r.problems.append("page 0: bytes after the identity are set")
    slots = [
        fmt.read_record_slot(_read_block(fd, page, ps, geo), i, page, geo, r.file_size, crc32c)
        for i, page in enumerate(header.records)
    ]
    try:
        good, passed = fmt.in_force(
            slots, ps, r.file_size, lambda off, n: _read(fd, off, n), crc32c
        )
    except CorruptMetadata as exc:
        raise _Fatal(str(exc)) from None
    for s in slots:
        if s.header is not None:
            r.records.append(f"slot {s.number}: generation {s.header.generation}")
        else:
            r.records.append(f"slot {s.number}: {s.why}")
            if s.why.startswith(fmt.IMPOSSIBLE):
                r.problems.append(f"commit record slot {s.number}: {s.why}")
            elif s.why != "empty":
                r.notes.append(
                    f"commit record slot {s.number} does not read ({s.why}): a record torn by a "
                    "crash, the commit before the one in force, or damage"
                )
    for s in passed:
        r.notes.append(
            f"commit record slot {s.number} (generation {s.header.generation}) is a one-barrier "  # type: ignore[union-attr]
            "commit whose pages did not all land: a commit cut short, or damage to them"
        )
    if not good:
        raise _Fatal("no valid commit record")
    for attempt, slot in enumerate(good):
        state = _State(fd, r, geo, slot, header.reserved, crc32c, progress)
        problems = state.verify()
        if attempt == 0:
            r.problems.extend(problems)
            state.report()
            if not problems:
                return
        elif not problems:
            r.notes.append(
                f"the commit before it (generation {slot.header.generation}) is whole: "  # type: ignore[union-attr]
                "Pager.open opens that one and warns"
            )
            return
    r.notes.append("no older commit is whole either: Pager.open raises")


def _read_block(fd: int, page: int, ps: int, geo: fmt.Geometry) -> bytes:
    data = os.pread(fd, geo.block, page * ps)
    return data


class _State:
    """One record's state, read and checked block by block."""

    def __init__(
        self,
        fd: int,
        r: Report,
        geo: fmt.Geometry,
        slot: fmt.RecordSlot,
        reserved: frozenset[int],
        crc32c: Crc,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.fd, self.r, self.geo, self.slot = fd, r, geo, slot
        self.rec = slot.header
        assert self.rec is not None
        self.reserved = reserved
        self.crc32c = crc32c
        self.progress = progress
        self.problems: list[str] = []
        self.refs: list[int] = sorted(reserved)
        self.used: dict[int, int] = {}  # leaf -> used bits
        self.data: dict[int, int] = {}
        self.pending: dict[int, int] = {}
        self.slots: dict[int, tuple[int, int]] = {}
        self.blocks = 0

    def report(self) -> None:
        r, rec = self.r, self.rec
        assert rec is not None
        r.generation, r.record, r.checkpoint = rec.generation, self.slot.number, rec.checkpoint
        r.page_count, r.free_count = rec.page_count, rec.free_count
        r.allocated_data_pages = rec.data_count
        r.log_words = len(self.slot.log) // 8
        r.tree_blocks = self.blocks
        r.pending_pages = sum(v.bit_count() for v in self.pending.values())
        r.protected_pages = sum(1 for p, _ in self.slots.values() if p)
        r.internal_pages = len(self.refs)

    # -- blocks ---------------------------------------------------------------------------

    def _block(self, what: str, ptr: tuple[int, int], magic: bytes, key: int) -> bytes | None:
        page, crc = ptr
        rec = self.rec
        assert rec is not None
        if not fmt.RESERVED_PAGES <= page < rec.page_count:
            self.problems.append(f"{what}: page {page} is outside the file")
            return None
        raw = _read(self.fd, page * self.geo.page_size, self.geo.block)
        head = fmt.BlockHeader(*fmt.BLOCK_HEADER.unpack_from(raw, 0))
        if head.magic != magic:
            why = "bad magic" if any(raw[:32]) else "empty"
            self.problems.append(f"{what} (page {page}): not a block of its kind ({why})")
            return None
        if head.crc != crc or self.crc32c(raw[8:]) != crc:
            self.problems.append(f"{what} (page {page}): checksum mismatch")
            return None
        if head.location != page or head.key != key:
            self.problems.append(f"{what} (page {page}): written for another place")
            return None
        if not 1 <= head.generation <= rec.checkpoint:
            self.problems.append(f"{what} (page {page}): generation {head.generation}")
            return None
        self.blocks += 1
        self.refs.append(page)
        return raw

    def _tree(self, name: str, leaf: bytes, node: bytes, root: tuple[int, int], height: int):  # type: ignore[no-untyped-def]
        """Yield (leaf index, leaf bytes) of every non-null leaf."""
        f = self.geo.fanout
        stack = [(height, 0, root)]
        while stack:
            level, index, ptr = stack.pop()
            if level == 0:
                raw = self._block(f"{name} leaf {index}", ptr, leaf, index)
                if raw is not None:
                    yield index, raw
                continue
            raw = self._block(
                f"{name} node {index} at level {level}", ptr, node, fmt.node_key(level, index)
            )
            if raw is None:
                continue
            for i in range(f):
                page, crc = fmt.POINTER.unpack_from(raw, 32 + 16 * i)
                if _U64.unpack_from(raw, 32 + 16 * i + 8)[0] >> 32:
                    self.problems.append(f"{name} node {index}: pointer {i} has reserved bits")
                if page:
                    stack.append((level - 1, index * f + i, (page, crc)))
                elif crc:
                    self.problems.append(f"{name} node {index}: a null pointer with a checksum")

    # -- the whole state ------------------------------------------------------------------

    def verify(self) -> list[str]:
        rec, geo = self.rec, self.geo
        assert rec is not None
        n, b, lp = rec.page_count, geo.leaf_bytes, geo.leaf_pages
        leaves = geo.bitmap_leaves(n)
        done = 0
        for k, raw in self._tree(
            "bitmap", fmt.BITMAP_LEAF, fmt.BITMAP_NODE, (rec.bitmap_root, rec.bitmap_crc),
            rec.bitmap_height,
        ):  # fmt: skip
            done += 1
            if self.progress is not None and done % 256 == 0:
                self.progress(done, leaves)
            if k >= leaves:
                self.problems.append(f"bitmap leaf {k} lies beyond the page count")
                continue
            u, d, p = (
                int.from_bytes(raw[32 + i * b : 32 + (i + 1) * b], "little") for i in range(3)
            )
            if any(raw[32 + 3 * b :]):
                self.problems.append(f"bitmap leaf {k}: bytes past its bitmaps are set")
            if d & ~u or p & u:
                self.problems.append(f"bitmap leaf {k}: its bits contradict each other")
            if not (u | p):
                self.problems.append(f"bitmap leaf {k} is stored although it is empty")
            if (u | p) >> max(0, n - k * lp):
                self.problems.append(f"bitmap leaf {k}: bits set beyond the page count")
            self.used[k], self.data[k], self.pending[k] = u, d, p
        if self.progress is not None:
            self.progress(leaves, leaves)
        f = geo.fanout
        if rec.dir_root:
            for k, raw in self._tree(
                "directory", fmt.DIR_LEAF, fmt.DIR_NODE, (rec.dir_root, rec.dir_crc),
                rec.dir_height,
            ):  # fmt: skip
                entries = 0
                for i in range(f):
                    page, crc = fmt.ENTRY.unpack_from(raw, 32 + 16 * i)
                    if any(raw[32 + 16 * i + 12 : 32 + 16 * i + 16]):
                        self.problems.append(f"directory leaf {k}: entry {i} has reserved bits")
                    if not page:
                        if crc:
                            self.problems.append(f"directory leaf {k}: entry {i} is malformed")
                        continue
                    entries += 1
                    if k * f + i >= rec.slot_count:
                        self.problems.append(f"protected page {k * f + i} is beyond slot_count")
                    self.slots[k * f + i] = (page, crc)
                if not entries:
                    self.problems.append(f"directory leaf {k} is stored although it is empty")
        elif rec.dir_height or rec.dir_crc:
            self.problems.append("the record has a directory height or checksum but no directory")
        self._apply_log()
        self._invariants()
        return self.problems

    def _bit(self, bits: dict[int, int], page: int) -> bool:
        lp = self.geo.leaf_pages
        return bool(bits.get(page // lp, 0) >> (page % lp) & 1)

    def _apply_log(self) -> None:
        rec = self.rec
        assert rec is not None
        words = [w for (w,) in fmt.WORD.iter_unpack(self.slot.log)]
        if words and fmt.word_kind(words[0]) != fmt.GEN:
            self.problems.append("the log does not begin with a generation")
        last, i = rec.checkpoint, 0
        while i < len(words):
            w = words[i]
            kind = fmt.word_kind(w)
            if kind == fmt.GEN:
                g = w & ((1 << fmt.KIND_SHIFT) - 1)
                if not last < g <= rec.generation:
                    self.problems.append(f"log word {i}: generation {g} is out of order")
                last = g
                i += 1
            elif kind in fmt.RUN_KINDS:
                self._change(i, kind, *fmt.word_run(w))
                i += 1
            elif kind == fmt.SLOT and i + 2 < len(words):
                slot, page, crc = w & fmt.PAGE_MASK, words[i + 1], words[i + 2]
                if slot >= rec.slot_count:
                    self.problems.append(
                        f"log word {i}: protected page {slot} is beyond slot_count"
                    )
                elif page and not (self._bit(self.used, page) and not self._bit(self.data, page)):
                    self.problems.append(f"log word {i}: protected page {slot} names page {page}")
                if crc >> 32:
                    self.problems.append(f"log word {i}: a malformed checksum")
                self.slots[slot] = (page, crc & 0xFFFFFFFF)
                i += 3
            else:
                self.problems.append(f"log word {i}: unknown kind {kind}")
                return
        if words and last != rec.generation:
            self.problems.append("the log does not end with its record's generation")

    def _change(self, i: int, kind: int, first: int, count: int) -> None:
        """Apply one run word, leaf by leaf, with bit masks."""
        rec = self.rec
        assert rec is not None
        if first + count > rec.page_count:
            self.problems.append(f"log word {i}: pages up to {first + count} are beyond the file")
            return
        lp = self.geo.leaf_pages
        page = first
        while page < first + count:
            k, off = divmod(page, lp)
            n = min(first + count - page, lp - off)
            mask = ((1 << n) - 1) << off
            used, data = self.used.get(k, 0), self.data.get(k, 0)
            if kind in (fmt.DATA, fmt.INTERNAL):
                if used & mask:
                    self.problems.append(f"log word {i}: a page of {page}..{page + n} is in use")
                self.used[k] = used | mask
                self.data[k] = data | mask if kind == fmt.DATA else data & ~mask
                self.pending[k] = self.pending.get(k, 0) & ~mask
            else:
                want = mask if kind == fmt.FREE_DATA else 0
                if used & mask != mask or data & mask != want:
                    self.problems.append(
                        f"log word {i}: a page of {page}..{page + n} is freed but was not so in use"
                    )
                self.used[k] = used & ~mask
                self.data[k] = data & ~mask
                self.pending[k] = self.pending.get(k, 0) | mask
            page += n

    def _invariants(self) -> None:
        rec, geo = self.rec, self.geo
        assert rec is not None
        used = sum(v.bit_count() for v in self.used.values())
        data = sum(v.bit_count() for v in self.data.values())
        internal = used - data
        if rec.page_count - used != rec.free_count:
            self.problems.append(
                f"free count {rec.free_count} disagrees with the bitmap "
                f"({rec.page_count - used} free)"
            )
        if data != rec.data_count:
            self.problems.append(f"data count {rec.data_count} disagrees with the bitmap ({data})")
        in_use = [(s, p, c) for s, (p, c) in sorted(self.slots.items()) if p]
        if len(in_use) != rec.slots_used:
            self.problems.append(
                f"the record counts {rec.slots_used} protected pages, the directory {len(in_use)}"
            )
        ps = geo.page_size
        for slot, page, crc in in_use:
            self.refs.append(page)
            if not fmt.RESERVED_PAGES <= page < rec.page_count:
                self.problems.append(f"protected page {slot}: page {page} is outside the file")
            elif self.crc32c(_read(self.fd, page * ps, ps)) != crc:
                self.problems.append(
                    f"protected page {slot}: its content (page {page}) does not match its checksum"
                )
        seen: set[int] = set()
        for page in self.refs:
            if page in seen:
                self.problems.append(f"internal page {page} is referenced twice")
            seen.add(page)
            if not (self._bit(self.used, page) and not self._bit(self.data, page)):
                self.problems.append(f"internal page {page} is not marked internal and in use")
        if internal != len(seen):
            self.problems.append(
                f"{internal} pages are marked internal but {len(seen)} are referenced"
            )


def _check_v1(fd: int, r: Report, crc32c: Crc) -> None:
    """A format-1 file: load it by format 1's rules (it upgrades on the first Pager.open)."""
    from . import _v1

    try:
        state = _v1.load(fd, crc32c)
    except _v1.V1Error as exc:
        raise _Fatal(str(exc)) from None
    r.page_size, r.page_count, r.free_count = state.page_size, state.page_count, state.free_count
    r.generation = state.generation
    r.allocated_data_pages = len(state.data_pages)
    r.protected_pages = len(state.protected)
    r.notes.append("format 1: Pager.open upgrades it to format 2 in one commit")
