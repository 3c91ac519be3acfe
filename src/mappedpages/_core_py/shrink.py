"""Shrinking: a commit whose page count ends after the last page in use, then the file cut to
it (docs/FORMAT.md, "Shrinking"). Mirrors csrc/shrink.c.

Page numbers never change, so data pages stay where they are; what can move does, to the
lowest free pages: protected pages' content (rewritten as a protected write of the same bytes)
and tree blocks (the checkpoint writes them anew). The pages they leave are pending until
the commit after (the state before must stay whole), so a shrink that moved anything cuts more
the second time it runs.
"""

from __future__ import annotations

import os

from .. import format as fmt
from . import alloc, directory, log
from .state import State, Tree, clear_bit, get_bit


def _shrunk_count(c: State, top: int) -> int:
    """The page count a shrink leaves: one past the last page ``top`` says (pages in use or
    pending: a page a snapshot may still read is pending), never below the slots made or the
    smallest file."""
    return max(top, c.counts.slot_count, fmt.MIN_PAGE_COUNT)


def _block_pages(c: State) -> list[int]:
    return [
        ptr[0]
        for tree in (c.bitmap, c.directory)
        for blocks in (tree.leaves, tree.nodes)
        for ptr in blocks.values()
        if ptr[0]
    ]


def _slots_used(c: State) -> list[int]:
    return [s for s in range(c.counts.slot_count) if get_bit(c.slot_bits, s)]


def _fixed_end(c: State) -> int:
    """Where the pages that cannot move end: data pages, pending pages and the reserved ones."""
    fixed = bytearray(c.taken)
    for page in _block_pages(c):
        clear_bit(fixed, page)
    for slot in _slots_used(c):
        clear_bit(fixed, c.slot_page[slot])
    return _shrunk_count(c, alloc.top_bit(fixed))


def _gains(c: State, start: int) -> bool:
    """Whether a shrink's commit would give anything back: a free tail now, or a page that can
    move (from ``start`` on) above the lowest free one. Otherwise it would only churn."""
    if alloc.top_bit(c.taken) < c.counts.n:
        return True
    lowest = alloc.find_free(c)
    if lowest < 0:
        return False
    above = max(start, lowest + 1)
    pages = [c.slot_page[s] for s in _slots_used(c)] + _block_pages(c)
    return any(page >= above for page in pages)


def mark_tail(c: State) -> None:
    """Prepare a shrink's commit: a checkpoint, since the log may name pages the cut removes
    and a checkpoint's record carries no log. Protected pages' content beyond where the fixed
    pages end moves down; the leaves of the free tail become dirty, so that the checkpoint
    writes them without those pages (empty ones become null); and the leaves below tree blocks
    beyond that end become dirty, so that the checkpoint moves those blocks down."""
    start = _fixed_end(c)
    if start >= c.counts.n or not _gains(c, start):
        return
    for slot in _slots_used(c):
        page = c.slot_page[slot]
        if page >= start and 0 <= alloc.find_free(c) < page:
            directory.move_slot(c, slot)
    lp = c.geo.leaf_pages
    for k in range(start // lp, (c.counts.n - 1) // lp + 1):
        log.dirty(c, c.bitmap, k)
    for tree in (c.bitmap, c.directory):
        _move_blocks(c, tree, start)
    c.force_checkpoint = c.forced = c.cut = True
    cut(c)  # first to the pages in use now: the checkpoint shapes its trees for that count


def _move_blocks(c: State, tree: Tree, start: int) -> None:
    """Blocks from ``start`` on move: their leaf (for a node, one leaf below it) becomes
    dirty, so that the checkpoint writes it, and every node above it, to the lowest free
    pages. In the order csrc/shrink.c visits them: by level, then index."""
    fanout = c.geo.fanout
    blocks = sorted(
        [((0, k), ptr[0]) for k, ptr in tree.leaves.items()]
        + [((lv, j), ptr[0]) for (lv, j), ptr in tree.nodes.items() if lv <= tree.height]
    )
    for (level, index), page in blocks:
        if not page or page < start:
            continue
        if level == 0:
            log.dirty(c, tree, index)
            continue
        below = range(index * fanout**level, (index + 1) * fanout**level)
        leaf = next((k for k in sorted(tree.leaves) if k in below and tree.leaves[k][0]), None)
        if leaf is not None:
            log.dirty(c, tree, leaf)


def cut(c: State) -> None:
    """The cut: the state ends after its last page in use or pending. A shrink's commit cuts
    before its checkpoint and again after it, once the checkpoint has placed its blocks."""
    n = _shrunk_count(c, alloc.top_bit(c.taken))
    if n >= c.counts.n:
        return
    # the pages cut lose their blocks: grown again, they are holes to be given space anew
    written, whole = c.written, (n + 7) >> 3
    written[whole:] = bytes(len(written) - whole)
    if n & 7:
        written[n >> 3] &= (1 << (n & 7)) - 1
    c.counts.free -= c.counts.n - n
    c.counts.n = n
    c.space_from = min(c.space_from, n)


def truncate(c: State, before: int) -> int:
    """After a shrink's commit: end the file at the committed page count, only now that the
    record saying so is durable (a crash before leaves a longer file, which is allowed).
    Returns the pages the file lost since it was ``before`` bytes long (moving pages down may
    have reserved more meanwhile)."""
    keep = c.counts.n * c.ps
    if fmt.file_size(c.fd) > keep:
        os.ftruncate(c.fd, keep)
        if c.sync:
            os.fdatasync(c.fd)
    return max(0, before - keep) // c.ps
