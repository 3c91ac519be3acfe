"""Snapshots inside the writer's process: ``pager.snapshot()`` (docs/API.md, "Snapshots").

A snapshot shows the writer's last commit when it was taken, with ReadOnlyPager's read API,
from any thread and without a lock against the writer: the writer's core registers it, and
writes no page the snapshot can reach until it is closed. docs/DESIGN.md ("Snapshots") gives
the rules; the reader table (_readertable.py) does the same for other processes.
"""

from __future__ import annotations

from typing import Any

from .reader import PageReader

__all__ = ["Snapshot"]


class Snapshot(PageReader):
    """The state of one commit of a Pager, read-only: ``with pager.snapshot() as snap``.

    Made only by ``pager.snapshot()`` (calling ``Snapshot(...)`` raises ``TypeError``). It has
    the read API of ``ReadOnlyPager`` and may be used from any thread; ``close()`` (or the end
    of the ``with`` block) releases it.
    """

    __slots__ = ()
    _made_by = "pager.snapshot()"

    @classmethod
    def _of(cls, core: Any, path: str) -> Snapshot:
        self = object.__new__(cls)
        self._setup(core, path)
        return self
