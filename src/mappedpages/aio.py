"""The asyncio face of the pager: each ``*_async`` method runs its call in a worker thread.

A commit waits for the disk (one or two syncs); run on the event loop thread it would stall
every other task for that long. The worker's call takes the pager's lock like any other call,
so the async methods mix freely with plain calls from any thread. Inside a batch that the
calling thread holds, the call runs at once on that thread instead: a worker would wait for
the batch's lock, and the batch for the worker. Nothing inside a batch syncs anyway.

``batch_async`` runs its block on the loop's thread and its commit in a worker: the core hands
the open batch to the worker (``adopt``), which commits it while the loop runs on.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from .handles import PageId, ProtectedPageId

if TYPE_CHECKING:
    from .pager import Pager

__all__ = ["AsyncPagerMethods", "off_loop"]

T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args: Any, inline: bool = False) -> T:
    """``fn(*args)`` in the loop's default executor (``inline``: here, at once)."""
    if inline:
        return fn(*args)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args))


async def _outcome(fut: asyncio.Future[None]) -> tuple[BaseException | None, bool]:
    """Wait for a commit in a worker thread to end, even when the task is cancelled meanwhile
    (the commit runs on regardless, and the batch's state must follow its outcome): its
    exception or None, and whether the task was cancelled."""
    cancelled = False
    while True:
        try:
            await asyncio.shield(fut)
            return None, cancelled
        except asyncio.CancelledError:
            if fut.cancelled():  # the commit itself was cancelled before it started
                return None, True
            cancelled = True
        except BaseException as exc:  # the commit's own failure
            return exc, cancelled


class AsyncPagerMethods:
    """Mixed into ``Pager``: the coroutine versions of the calls that may wait for the disk."""

    __slots__ = ()

    _batch_thread: int

    if TYPE_CHECKING:  # provided by Pager

        def alloc(self) -> PageId: ...
        def free(self, pid: PageId) -> None: ...
        def alloc_bulk(self, n: int) -> list[PageId]: ...
        def free_bulk(self, ids: Iterable[PageId]) -> None: ...
        def alloc_protected(self) -> ProtectedPageId: ...
        def free_protected(self, ppid: ProtectedPageId) -> None: ...
        def alloc_protected_bulk(self, n: int) -> list[ProtectedPageId]: ...
        def free_protected_bulk(self, ids: Iterable[ProtectedPageId]) -> None: ...
        def flush(self, ids: Iterable[PageId] | None = None) -> None: ...
        def shrink(self) -> int: ...

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await off_loop(fn, *args, inline=self._batch_thread == threading.get_ident())

    async def alloc_async(self) -> PageId:
        """``alloc()``, its commit off the event loop."""
        return await self._off_loop(self.alloc)

    async def free_async(self, pid: PageId) -> None:
        """``free(pid)``, its commit off the event loop."""
        await self._off_loop(self.free, pid)

    async def alloc_bulk_async(self, n: int) -> list[PageId]:
        """``alloc_bulk(n)``, its commit off the event loop."""
        return await self._off_loop(self.alloc_bulk, n)

    async def free_bulk_async(self, ids: Iterable[PageId]) -> None:
        """``free_bulk(ids)``, its commit off the event loop (``ids`` is read first)."""
        await self._off_loop(self.free_bulk, list(ids))

    async def alloc_protected_async(self) -> ProtectedPageId:
        """``alloc_protected()``, its commit off the event loop."""
        return await self._off_loop(self.alloc_protected)

    async def free_protected_async(self, ppid: ProtectedPageId) -> None:
        """``free_protected(ppid)``, its commit off the event loop."""
        await self._off_loop(self.free_protected, ppid)

    async def alloc_protected_bulk_async(self, n: int) -> list[ProtectedPageId]:
        """``alloc_protected_bulk(n)``, its commit off the event loop."""
        return await self._off_loop(self.alloc_protected_bulk, n)

    async def free_protected_bulk_async(self, ids: Iterable[ProtectedPageId]) -> None:
        """``free_protected_bulk(ids)``, its commit off the event loop (``ids`` is read
        first)."""
        await self._off_loop(self.free_protected_bulk, list(ids))

    async def flush_async(self, ids: Iterable[PageId] | None = None) -> None:
        """``flush(ids)``, its sync off the event loop."""
        await self._off_loop(self.flush, None if ids is None else list(ids))

    async def shrink_async(self) -> int:
        """``shrink()``, its commits and the truncation off the event loop."""
        return await self._off_loop(self.shrink)

    @asynccontextmanager
    async def batch_async(self) -> AsyncIterator[Pager]:
        """``batch()`` for a coroutine: ``async with pager.batch_async(): ...``. The block runs
        on the loop's thread; the commit at its end runs in a worker thread, so the loop keeps
        running while it syncs.

        The same rules as ``batch()``: an exception leaving the block keeps none of it, a
        batch inside joins it, other threads' calls wait for it to end. Tasks of the same
        loop share its thread, so the calls any of them makes while the block is open join
        the batch: give concurrent transactions an ``asyncio.Lock``.
        """
        pager: Pager = self  # type: ignore[assignment]
        lock = pager._lock
        lock.acquire()  # held to the end, by the loop's thread, as batch() holds it
        try:
            pager._enter_batch()
            try:
                yield pager
            except BaseException:
                pager._end_batch(failed=True)
                raise
            if pager._ending_batch(failed=False):
                core = pager._core

                def commit() -> None:  # in the worker: it owns the batch from here on
                    core.adopt()
                    core.commit()

                fut = asyncio.get_running_loop().run_in_executor(None, commit)
                error, cancelled = await _outcome(fut)
                if fut.cancelled():  # it never ran (the loop shuts down): the batch is open
                    pager._abort()
                    raise asyncio.CancelledError
                if error is not None:
                    pager._commit_failed()
                    raise error
                pager._batch_committed()
                if cancelled:  # after the commit's outcome is known and kept
                    raise asyncio.CancelledError
        finally:
            if pager._batch_depth == 0:
                pager._batch_thread = 0
            lock.release()
