"""The commit sequence (docs/FORMAT.md, "A commit"), step by step. Mirrors csrc/commit.c:

1. write:  the log carries this commit's words if they fit; otherwise a checkpoint writes the
           changed leaves and the nodes above them to new pages (checkpoint.py);
2. sync1:  make the staged pages and blocks durable, and the data pages a batch flushed
           (fdatasync after growth); skipped by a one-barrier commit, whose record lists them
           with their checksums;
3. flip:   write the record slot the record in force does not occupy;
4. sync2:  make the record durable (a one-barrier commit: with everything it wrote);
5. done:   adopt the new state in memory.

A failure from the first write on poisons the core: the file still holds a consistent state, but
this process can no longer tell which one. A failure before it (a checkpoint that found no space
for its blocks) is rolled back by the caller, as a failed call is.
"""

from __future__ import annotations

import mmap
import os
import struct

from .. import format as fmt
from . import alloc, checkpoint, log, shrink, sync
from .crc import crc32c
from .state import State

_OS_PAGE = mmap.PAGESIZE


def pending(c: State) -> bool:
    """Whether there is anything to commit (a batch that only flushed commits too: its commit
    is what makes the data durable)."""
    flushed = bool(c.flush_hi) or c.flush_everything or bool(c.sealed)
    return c.words_start >= 0 or c.grew or c.forced or flushed


def commit(c: State) -> None:
    if not pending(c):
        return
    if c.gen + 1 >= fmt.GENERATION_LIMIT:  # only a forged file gets here: 2^60 commits
        c.poisoned = True
        raise ValueError("the file is at the last generation a commit record can hold")
    try:
        single = write_step(c)
    except BaseException:
        # failed before its checkpoint wrote anything (no space for a block's page, say): it
        # left only what a rollback undoes, which the caller does
        if c.no_undo:
            c.poisoned = True
        raise
    try:
        if not single:
            sync1_step(c)
        flip_step(c, single)
        sync2_step(c, single)
    except BaseException:
        c.poisoned = True
        raise
    done_step(c)


def autocommit(c: State) -> None:
    if not c.in_batch:
        commit(c)


def write_step(c: State) -> bool:
    """Log or checkpoint; returns whether the commit takes a single barrier."""
    alloc.check_length(c)  # nothing is committed past the end of a truncated file
    log.start(c)  # even a commit that changed nothing the log tells (growth alone) has a GEN
    c.checkpointed = c.force_checkpoint or len(c.log) > fmt.log_room(c.geo.block)
    if c.checkpointed:
        checkpoint.write(c)
    if c.cut:  # a shrink: after the checkpoint has placed its blocks
        shrink.cut(c)
    unseal_viewed(c)
    runs, pages = listing(c)
    c.listing = runs
    # data pages flushed by a plain flush are never listed: the user may write them in place
    # after the commit, and a listed page that changed would make the record look cut short;
    # sealed ones are listed, and retired before anything writes them (PyCore.retire)
    flushed = bool(c.flush_hi) or c.flush_everything
    allowed = fmt.one_barrier_allowed(c.ps) and len(runs) <= fmt.LISTED_MAX
    return not c.grew and not flushed and allowed and pages <= fmt.LISTED_PAGES


def unseal_viewed(c: State) -> None:
    """Sealed pages given out as writable views since their flush are flushed, not listed."""
    viewed = [p for p in c.sealed if p in c.viewed]
    if viewed:
        c.sealed = [p for p in c.sealed if p not in c.viewed]
        widen_flush(c, min(viewed) * c.ps, (max(viewed) + 1) * c.ps)


def widen_flush(c: State, lo: int, hi: int) -> None:
    """The open batch's flush span grows to cover bytes ``[lo, hi)``."""
    c.flush_lo = min(lo, c.flush_lo) if c.flush_hi else lo
    c.flush_hi = max(hi, c.flush_hi)


def written(c: State) -> list[int]:
    """The pages this commit wrote besides its record, and the sealed pages that are still
    data pages, ascending and each once."""
    pages = set(c.staged) | set(c.blocks)
    pages.update(p for p in c.sealed if alloc.is_data(c, p))
    return sorted(pages)


def listing(c: State) -> tuple[list[tuple[int, int]], int]:
    """Those pages as runs of consecutive pages, (first, count); and how many pages."""
    pages = written(c)
    runs: list[tuple[int, int]] = []
    for p in pages:
        if runs and runs[-1][0] + runs[-1][1] == p and runs[-1][1] < fmt.RUN_LIMIT:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return runs, len(pages)


def _spans(c: State, pages: list[int]) -> list[tuple[int, int]]:
    return [(p * c.ps, c.ps) for p in pages]


def sync1_step(c: State) -> None:
    flushed = [(c.flush_lo, c.flush_hi - c.flush_lo)] if c.flush_hi else []
    if c.hook is not None:
        c.hook("barrier1")
    if not c.sync:  # no barriers for commits, but flushes asked
        sync_flushed(c)
        return
    if c.grew or c.flush_everything:
        os.fdatasync(c.fd)
        return
    spans = _spans(c, c.staged + c.blocks + c.sealed) + flushed
    if spans:
        msync(c, spans)


def flip_step(c: State, single: bool) -> None:
    """Write the new record into the slot the record in force does not occupy."""
    geo, counts = c.geo, c.counts
    listed = b""
    if single:
        ps, mm = c.ps, c.mm
        listed = b"".join(  # the runs the write step found: nothing was written since
            fmt.LISTED.pack(p, crc32c(mm[p * ps : (p + n) * ps]), n - 1) for p, n in c.listing
        )
    broot, bcrc = c.bitmap.root()
    droot, dcrc = c.directory.root()
    rec = fmt.Record(
        fmt.RECORD_MAGIC, 0, c.gen + 1, counts.n, counts.free, counts.data,
        counts.slot_count, counts.slots_used,
        c.gen + 1 if c.checkpointed else c.checkpoint,
        broot, bcrc, c.bitmap.height, c.directory.height, fmt.FLAG_ONE_BARRIER if single else 0,
        len(listed) // fmt.LISTED.size, droot, dcrc, 0, 0,
    )  # fmt: skip
    log_crc = crc32c(bytes(c.log[c.log_committed :]), c.log_crc_committed) if c.log else 0
    raw = fmt.pack_record(geo.block, rec, listed, bytes(c.log), crc32c, log_crc)
    page = c.record_pages[1 - c.rec]
    c.mm[page * c.ps : page * c.ps + geo.block] = raw
    c.next_log_crc = log_crc


def sync2_step(c: State, single: bool) -> None:
    page = c.record_pages[1 - c.rec]
    spans = [(page * c.ps, c.geo.block)]
    if single:
        spans += _spans(c, c.staged + c.blocks + c.sealed)
    barrier(c, "barrier2", spans)


def done_step(c: State) -> None:
    c.gen += 1
    c.rec = 1 - c.rec
    if c.checkpointed:
        c.checkpoint = c.gen
    c.committed = c.counts.copy()
    c.log_committed = len(c.log)
    c.log_crc_committed = c.next_log_crc
    alloc.clear_commit(c)


def barrier(c: State, kind: str, spans: list[tuple[int, int]]) -> None:
    """Call the hook, then make ``spans`` (offset, length) of the mapping durable."""
    if c.hook is not None:
        c.hook(kind)
    if c.sync and spans:
        msync(c, spans)


def sync_flushed(c: State) -> None:
    """Make what the open batch flushed durable (a rollback's, a sync=False commit's)."""
    if c.flush_everything:
        os.fdatasync(c.fd)
        return
    spans = _spans(c, c.sealed) + ([(c.flush_lo, c.flush_hi - c.flush_lo)] if c.flush_hi else [])
    if spans:
        msync(c, spans)


def runs_in_force(c: State) -> list[tuple[int, int]]:
    """The runs the record in force lists, (first, count): while it is in force, the state is
    only whole while they hold what its commit wrote."""
    at = c.record_pages[c.rec] * c.ps
    rec = fmt.Record(*fmt.RECORD.unpack_from(c.mm, at))
    if not rec.flags & fmt.FLAG_ONE_BARRIER:
        return []
    entries = (
        fmt.LISTED.unpack_from(c.mm, at + fmt.LISTED_OFFSET + 16 * i)
        for i in range(min(rec.listed, fmt.LISTED_MAX))
    )
    return [(first, run + 1) for first, _crc, run in entries]


def listed_in_force(c: State, page: int) -> bool:
    return any(first <= page < first + n for first, n in runs_in_force(c))


def retire_write(c: State) -> None:
    """Retire the record in force before a page it lists is written: the same record, listing
    nothing, into the other slot, which is then the one in force (the same state and
    generation; of two records of one generation the one that lists nothing is in force). The
    slot it overwrites held the state before, which nothing needs once this copy is durable."""
    ps, block = c.ps, c.geo.block
    at, to = c.record_pages[c.rec] * ps, c.record_pages[1 - c.rec] * ps
    raw = bytearray(c.mm[at : at + block])
    rec = fmt.Record(*fmt.RECORD.unpack_from(raw, 0))._replace(flags=0, listed=0, crc=0)
    fmt.RECORD.pack_into(raw, 0, *rec)
    raw[fmt.LISTED_OFFSET : fmt.LOG_OFFSET] = bytes(fmt.LOG_OFFSET - fmt.LISTED_OFFSET)
    struct.pack_into("<I", raw, 4, crc32c(bytes(raw[fmt.RECORD_CRC_FROM : fmt.LISTED_OFFSET])))
    c.mm[to : to + block] = raw
    c.rec = 1 - c.rec


def retire_sync(c: State) -> None:
    """Always synced, even with sync=False: the record it retires was durable."""
    msync(c, [(c.record_pages[c.rec] * c.ps, c.geo.block)])


def msync(c: State, spans: list[tuple[int, int]]) -> None:
    """One msync(MS_SYNC) over the span of ``spans``, rounded out to whole OS pages."""
    lo = min(off for off, _ in spans) // _OS_PAGE * _OS_PAGE
    hi = (max(off + n for off, n in spans) + _OS_PAGE - 1) // _OS_PAGE * _OS_PAGE
    sync.msync(c.mm, lo, min(hi, len(c.mm)) - lo)
