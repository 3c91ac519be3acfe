"""Reading the two trees: validating a block against the pointer that names it, walking a
whole tree (open) or one path (snapshots). Mirrors csrc/tree.c."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .. import format as fmt
from ..errors import CorruptMetadata, CorruptProtectedDirectory, MappedPageError
from .state import NULL, Pointer


class Kind(NamedTuple):
    """What distinguishes the bitmap tree from the directory tree."""

    name: str
    leaf: bytes
    node: bytes
    error: type[MappedPageError]


BITMAP = Kind("bitmap", fmt.BITMAP_LEAF, fmt.BITMAP_NODE, CorruptMetadata)
DIRECTORY = Kind("directory", fmt.DIR_LEAF, fmt.DIR_NODE, CorruptProtectedDirectory)


class Reader:
    """Validated reads of one state's blocks from a buffer holding the file."""

    __slots__ = ("checkpoint", "crc32c", "geo", "n", "view")

    def __init__(
        self, view: Any, geo: fmt.Geometry, n: int, checkpoint: int, crc32c: Callable[..., int]
    ) -> None:
        self.view = view
        self.geo = geo
        self.n = n
        self.checkpoint = checkpoint
        self.crc32c = crc32c

    def block(self, kind: Kind, ptr: Pointer, level: int, index: int) -> bytes:
        """The block ``ptr`` names at (``level``, ``index``) of a ``kind`` tree, validated."""
        page, crc = ptr
        what = f"{kind.name} {'leaf' if level == 0 else 'node'} {index}"
        if level:
            what += f" at level {level}"
        if not fmt.RESERVED_PAGES <= page < self.n:
            raise kind.error(f"{what}: page {page} is outside the file")
        geo = self.geo
        off = page * geo.page_size
        raw = bytes(self.view[off : off + geo.block])
        magic, own, gen, location, key = fmt.BLOCK_HEADER.unpack_from(raw, 0)
        expected = kind.node if level else kind.leaf
        if magic != expected:
            raise kind.error(f"{what} (page {page}): not a block of its kind")
        if own != crc or self.crc32c(raw[8:]) != crc:
            raise kind.error(f"{what} (page {page}): checksum mismatch")
        if location != page or key != (fmt.node_key(level, index) if level else index):
            raise kind.error(f"{what} (page {page}): written for another place")
        if not 1 <= gen <= self.checkpoint:
            raise kind.error(f"{what} (page {page}): generation {gen} is not of this state")
        if kind is BITMAP and level == 0:
            tail = raw[fmt.BLOCK_HEADER_SIZE + 3 * geo.leaf_bytes :]
        else:  # the zero word of every pointer or entry
            tail = b"".join(raw[fmt.BLOCK_HEADER_SIZE + 12 + i :: 16] for i in range(4))
        if any(tail):
            raise kind.error(f"{what} (page {page}): reserved bytes are set")
        return raw

    def walk(
        self, kind: Kind, root: Pointer, height: int
    ) -> Iterator[tuple[int, int, Pointer, bytes]]:
        """Every non-null block of a tree, parents before children: (level, index, pointer,
        bytes)."""
        if root == NULL:
            return
        stack = [(height, 0, root)]
        fanout = self.geo.fanout
        while stack:
            level, index, ptr = stack.pop()
            raw = self.block(kind, ptr, level, index)
            yield level, index, ptr, raw
            if level:
                for i in range(fanout - 1, -1, -1):
                    child = pointer(raw, i)
                    if child != NULL:
                        stack.append((level - 1, index * fanout + i, child))
                    elif child[1]:
                        raise kind.error(
                            f"{kind.name} node {index}: a null pointer with a checksum"
                        )

    def leaf(self, kind: Kind, root: Pointer, height: int, index: int) -> bytes | None:
        """Leaf ``index`` of a tree (None when it is empty), read along its path."""
        fanout = self.geo.fanout
        if index >= fanout**height or root == NULL:
            return None
        ptr, level = root, height
        while level:
            raw = self.block(kind, ptr, level, index // fanout**level)
            ptr = pointer(raw, index // fanout ** (level - 1) % fanout)
            level -= 1
            if ptr == NULL:
                return None
        return self.block(kind, ptr, 0, index)


def pointer(block: bytes, i: int) -> Pointer:
    page, crc = fmt.POINTER.unpack_from(block, fmt.BLOCK_HEADER_SIZE + 16 * i)
    return page, crc
