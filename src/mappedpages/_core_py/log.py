"""The record's log: appending this commit's words (with runs), and reading a log back.
Mirrors csrc/log.c. docs/FORMAT.md ("The log") gives the words."""

from __future__ import annotations

from collections.abc import Iterator

from .. import format as fmt
from ..errors import CorruptMetadata
from .state import State, Tree

_WORD = fmt.WORD


def start(c: State) -> None:
    """This commit's GEN word, before its first change."""
    if c.words_start < 0:
        c.words_start = len(c.log)
        c.log += _WORD.pack(fmt.gen_word(c.gen + 1))


def dirty(c: State, tree: Tree, leaf: int) -> None:
    if leaf not in tree.dirty:
        tree.dirty.add(leaf)
        c.undo_dirty.append((tree, leaf))


def run(c: State, kind: int, page: int) -> None:
    """Log that ``page`` changed as ``kind`` says, extending the last word when it can."""
    start(c)
    log = c.log
    last = len(log) - 8
    if last > c.words_start:
        (word,) = _WORD.unpack_from(log, last)
        first, count = fmt.word_run(word)
        if fmt.word_kind(word) == kind and first + count == page and count < fmt.RUN_MAX:
            _WORD.pack_into(log, last, fmt.run_word(kind, first, count + 1))
            dirty(c, c.bitmap, page // c.geo.leaf_pages)
            return
    log += _WORD.pack(fmt.run_word(kind, page, 1))
    dirty(c, c.bitmap, page // c.geo.leaf_pages)


def slot(c: State, slot: int, page: int, crc: int) -> None:
    start(c)
    c.log += b"".join(_WORD.pack(w) for w in fmt.slot_words(slot, page, crc))
    dirty(c, c.directory, slot // c.geo.fanout)


Entry = tuple[int, int, int, int]  # kind, then (first page, count) / (slot, page, crc) / (gen)


def entries(log: bytes, error: type[Exception] = CorruptMetadata) -> Iterator[Entry]:
    """The entries of a log, in order; a malformed word raises ``error``."""
    words = [w for (w,) in _WORD.iter_unpack(log)]
    i = 0
    while i < len(words):
        word = words[i]
        kind = fmt.word_kind(word)
        if kind == fmt.GEN:
            yield kind, word & ((1 << fmt.KIND_SHIFT) - 1), 0, 0
            i += 1
        elif kind in fmt.RUN_KINDS:
            first, count = fmt.word_run(word)
            yield kind, first, count, 0
            i += 1
        elif kind == fmt.SLOT and i + 2 < len(words):
            page, crc = words[i + 1], words[i + 2]
            if word >> fmt.RUN_SHIFT & 0xFFF or page >= fmt.PAGE_LIMIT or crc >> 32:
                raise error(f"log word {i}: a malformed slot change")
            yield kind, word & fmt.PAGE_MASK, page, crc
            i += 3
        else:
            raise error(f"log word {i}: unknown kind {kind}")


def check_generations(log: bytes, checkpoint: int, generation: int) -> None:
    """A non-empty log begins with a GEN word; GEN values rise within (checkpoint,
    generation], the last being ``generation``."""
    last = checkpoint
    first = True
    for kind, value, _, _ in entries(log):
        if first and kind != fmt.GEN:
            raise CorruptMetadata("the log does not begin with a generation")
        first = False
        if kind == fmt.GEN:
            if not last < value <= generation:
                raise CorruptMetadata(f"log generation {value} is out of order")
            last = value
    if log and last != generation:
        raise CorruptMetadata("the log does not end with its record's generation")
