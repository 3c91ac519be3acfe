"""Staged writes of protected pages (``ppid.get_mut(pager)``).

The directory that maps each protected page to its content page lives in the core (docs/FORMAT.md,
"Trees"); a write stages into a private buffer and, on commit, the core copies it into a page
no snapshot reads and switches the slot to it in one commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import Unavailable
from .handles import ProtectedPageId

if TYPE_CHECKING:
    from .pager import Pager

__all__ = ["ProtectedPageWriter"]


class ProtectedPageWriter:
    """A staged write of one protected page (``ppid.get_mut(pager)``).

    The staged copy is a private buffer that starts as the page's content; ``commit`` writes it
    to a page no snapshot reads and switches the protected page to it, atomically and durably.
    Used as a context manager it commits on a clean exit and discards on an exception.
    """

    __slots__ = ("_buf", "_done", "_pager", "_pid", "_serial")

    def __init__(
        self, pager: Pager, pid: ProtectedPageId, serial: tuple[int, int], content: bytes
    ) -> None:
        self._pager = pager
        self._pid = pid
        self._serial = serial
        self._buf = bytearray(content)
        self._done = False

    @property
    def id(self) -> ProtectedPageId:
        """The protected page this writer stages a new version of."""
        return self._pid

    def page_mut(self) -> memoryview:
        """Writable view of the staged copy."""
        if self._done:
            raise Unavailable("this writer has already committed or discarded")
        return memoryview(self._buf)

    def commit(self) -> None:
        """Make the staged copy the committed content, atomically and durably."""
        if self._done:
            raise Unavailable("this writer has already committed or discarded")
        self._pager._commit_protected(self._pid, self._serial, self._buf)
        self._done = True
        self._buf = bytearray()

    async def commit_async(self) -> None:
        """``commit()``, its sync off the event loop (at once, on this thread, inside this
        thread's batch)."""
        await self._pager._off_loop(self.commit)

    def discard(self) -> None:
        """Drop the staged copy; the committed content stays."""
        self._done = True
        self._buf = bytearray()

    def __enter__(self) -> ProtectedPageWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None and not self._done:
            self.commit()
        else:
            self.discard()

    def __repr__(self) -> str:
        state = "done" if self._done else "staged"
        return f"<ProtectedPageWriter {self._pid!r} {state}>"
