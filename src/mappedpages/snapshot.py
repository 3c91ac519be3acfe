"""Snapshots inside the writer's process: ``pager.snapshot()`` (API.md, "Snapshots").

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
    """The state of one commit of a Pager, read-only: ``with pager.snapshot() as snap``."""

    __slots__ = ()

    @classmethod
    def _of(cls, core: Any, path: str) -> Snapshot:
        self = object.__new__(cls)
        self._setup(core, path)
        return self
