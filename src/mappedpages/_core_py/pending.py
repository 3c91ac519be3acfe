"""Pending pages: freed pages that a snapshot may still read, and when they may be reused.
Mirrors csrc/pending.c. docs/FORMAT.md ("Reclamation") states the rule."""

from __future__ import annotations

from typing import Protocol

from .state import State, clear_bit, set_bit


class Table(Protocol):
    """The reader table as the writer sees it (mappedpages._readertable.WriterView)."""

    def horizon(self, committed: int) -> int:
        """The smallest generation a live snapshot of another process reads, or ``committed``."""


def hold(c: State, page: int, gen: int) -> None:
    """``page``, freed by commit ``gen``, stays taken until no snapshot older than ``gen``."""
    c.held[page] = gen
    set_bit(c.pending, page)
    c.fifo.append((gen, page))


def horizon(c: State) -> int:
    """The generation pages may be reclaimed up to: the oldest snapshot, or the last commit."""
    h = c.gen
    with c.pins_lock:
        if c.pins:
            h = min(h, min(c.pins))
    if c.table is not None:
        h = min(h, c.table.horizon(c.gen))  # type: ignore[attr-defined]
    return h


def release(c: State) -> None:
    """Make every pending page freed up to the horizon free to reuse (at the start of each
    mutating call, outside a batch, and when a batch begins)."""
    fifo = c.fifo
    if not fifo or fifo[0][0] > c.gen:
        return
    h = horizon(c)
    held = c.held
    while fifo and fifo[0][0] <= h:
        gen, page = fifo.popleft()
        if held.get(page) == gen:
            del held[page]
            clear_bit(c.pending, page)
            clear_bit(c.taken, page)
            c.hint = min(c.hint, page >> 3)


def pin(c: State) -> int:
    """Register a snapshot of the last commit in this process."""
    with c.pins_lock:
        c.pins[c.gen] = c.pins.get(c.gen, 0) + 1
    return c.gen


def unpin(c: State, gen: int) -> None:
    """Release a snapshot: from any thread, without the core's lock, which the writer's batch
    may hold (as csrc/snapshot.c takes only the writer's mutex)."""
    with c.pins_lock:
        left = c.pins.get(gen, 0) - 1
        if left > 0:
            c.pins[gen] = left
        else:
            c.pins.pop(gen, None)
