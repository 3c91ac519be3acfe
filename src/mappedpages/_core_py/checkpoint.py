"""A checkpoint: every leaf changed since the last one, and every node above such a leaf,
written to new pages as the next generation. Mirrors csrc/checkpoint.c; docs/FORMAT.md ("A
checkpoint") gives the steps, which both cores follow to the page."""

from __future__ import annotations

import struct

from .. import format as fmt
from . import alloc
from .crc import crc32c
from .state import NULL, Pointer, State, Tree

Pos = tuple[int, int, int]  # tree (0 bitmap, 1 directory), level, index
_U32 = struct.Struct("<I")


def _empty_leaf(c: State, tree: int, k: int) -> bool:
    if tree == 0:
        b = c.geo.leaf_bytes
        return not any(c.taken[k * b : (k + 1) * b])
    f = c.geo.fanout
    lo, hi = k * f, (k + 1) * f
    bits = int.from_bytes(c.slot_bits[lo >> 3 : (hi + 7) >> 3], "little") >> (lo & 7)
    return not bits & ((1 << f) - 1)


def _heights(c: State) -> tuple[int, int]:
    """The trees' heights: the least that holds the state's leaves, and never less than the
    tree has (a tree does not get shorter when a shrink lowers the page count)."""
    geo = c.geo
    counts = c.counts
    return max(geo.height_for(geo.bitmap_leaves(counts.n)), c.bitmap.height), max(
        geo.height_for(geo.dir_leaves(counts.slot_count)), c.directory.height
    )


def _trees(c: State) -> tuple[Tree, Tree]:
    return c.bitmap, c.directory


def _existing(c: State, pos: Pos) -> Pointer | None:
    tree = _trees(c)[pos[0]]
    _, level, index = pos
    return tree.leaves.get(index) if level == 0 else tree.nodes.get((level, index))


def plan(c: State) -> tuple[list[Pos], list[Pos]]:
    """The blocks to write, in the order pages go to them, and those that become null."""
    fanout = c.geo.fanout
    need: list[Pos] = []
    nulled: list[Pos] = []
    for t, (tree, height) in enumerate(zip(_trees(c), _heights(c), strict=True)):
        present = set(tree.leaves)  # leaves non-null after the checkpoint, then nodes
        for k in sorted(tree.dirty):
            if not _empty_leaf(c, t, k):
                need.append((t, 0, k))
                present.add(k)
            elif k in tree.leaves:
                nulled.append((t, 0, k))
                present.discard(k)
        old_height, old_root = tree.height, tree.root()
        for level in range(1, height + 1):
            below, present = present, {j for (lv, j) in tree.nodes if lv == level}
            touched = {k // fanout**level for k in tree.dirty}
            if old_root != NULL and level > old_height:
                touched.add(0)  # the tree grew taller: a new node above the old root
            for j in sorted(touched):
                if any(j * fanout + i in below for i in range(fanout)):
                    need.append((t, level, j))
                    present.add(j)
                else:
                    present.discard(j)
                    if (level, j) in tree.nodes:
                        nulled.append((t, level, j))
    return need, nulled


def write(c: State) -> None:
    """Write the checkpoint's blocks (its record is commit.py's) and empty the log."""
    gen = c.gen + 1
    freed: set[int] = set()
    pages: list[int] = []
    while True:
        need, nulled = plan(c)
        changed = False
        for pos in need + nulled:
            old = _existing(c, pos)
            if old is not None and old[0] not in freed:
                freed.add(old[0])
                alloc.release(c, old[0])  # pending from this generation: snapshots read it
                changed = True
        while len(pages) < len(need):
            pages.append(alloc.take_lowest(c, True))
            changed = True
        if not changed:
            break
    c.no_undo = True  # from here on the trees change in ways the log does not tell
    assigned = dict(zip(need, sorted(pages), strict=True))
    for t, (tree, height) in enumerate(zip(_trees(c), _heights(c), strict=True)):
        for level in range(height + 1):
            blocks = tree.leaves if level == 0 else None
            for pos in nulled:
                if pos[:2] == (t, level):
                    if blocks is not None:
                        del blocks[pos[2]]
                    else:
                        del tree.nodes[(level, pos[2])]
            for pos in need:
                if pos[:2] == (t, level):
                    page = assigned[pos]
                    ptr = _write_block(c, t, level, pos[2], page, gen)
                    if blocks is not None:
                        blocks[pos[2]] = ptr
                    else:
                        tree.nodes[(level, pos[2])] = ptr
                    c.blocks.append(page)
        tree.height = height
        if tree.root() == NULL:  # every leaf is empty (no slot in use): no tree at all
            tree.height = 0
        tree.dirty.clear()
    c.undo_dirty.clear()
    del c.log[:]
    c.words_start = -1


def _write_block(c: State, t: int, level: int, index: int, page: int, gen: int) -> Pointer:
    geo = c.geo
    if level == 0:
        body = _bitmap_leaf(c, index) if t == 0 else _dir_leaf(c, index)
        magic = fmt.BITMAP_LEAF if t == 0 else fmt.DIR_LEAF
        key = index
    else:
        tree = _trees(c)[t]
        body = b"".join(
            fmt.POINTER.pack(*_child(tree, level - 1, index * geo.fanout + i))
            for i in range(geo.fanout)
        )
        magic = fmt.BITMAP_NODE if t == 0 else fmt.DIR_NODE
        key = fmt.node_key(level, index)
    raw = fmt.pack_block(geo.block, magic, gen, page, key, body, crc32c)
    off = page * geo.page_size
    c.mm[off : off + geo.block] = raw
    return page, _U32.unpack_from(raw, 4)[0]


def _child(tree: Tree, level: int, index: int) -> Pointer:
    ptr = tree.leaves.get(index) if level == 0 else tree.nodes.get((level, index))
    return ptr if ptr is not None else NULL


def _bitmap_leaf(c: State, k: int) -> bytes:
    b = c.geo.leaf_bytes
    span = slice(k * b, (k + 1) * b)
    taken = int.from_bytes(c.taken[span], "little")
    pend = int.from_bytes(c.pending[span], "little")
    internal = int.from_bytes(c.internal[span], "little")
    used = taken & ~pend
    data = used & ~internal
    return b"".join(x.to_bytes(b, "little") for x in (used, data, pend))


def _dir_leaf(c: State, k: int) -> bytes:
    f = c.geo.fanout
    out = bytearray(16 * f)
    count = c.counts.slot_count
    for i in range(f):
        slot = k * f + i
        if slot < count and c.slot_bits[slot >> 3] >> (slot & 7) & 1:
            fmt.ENTRY.pack_into(out, 16 * i, c.slot_page[slot], c.slot_crc[slot])
    return bytes(out)
