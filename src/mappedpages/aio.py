"""The asyncio face of the Pager: each ``*_async`` method runs its call in a worker thread.

A commit waits for the disk (two syncs); run on the event loop thread it would stall every
other task for that long. The worker's call takes the pager's lock like any other call, so
the async methods mix freely with plain calls from any thread. Inside a batch that the
calling thread holds, the call runs at once on that thread instead: a worker would wait for
the batch's lock, and the batch for the worker. Nothing inside a batch syncs anyway.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .handles import PageId, ProtectedPageId

__all__ = ["AsyncPagerMethods"]

T = TypeVar("T")


class AsyncPagerMethods:
    """Mixed into ``Pager``: the coroutine versions of the mutating calls."""

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

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        if self._batch_thread == threading.get_ident():
            return fn(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args))

    async def alloc_async(self) -> PageId:
        return await self._off_loop(self.alloc)

    async def free_async(self, pid: PageId) -> None:
        await self._off_loop(self.free, pid)

    async def alloc_bulk_async(self, n: int) -> list[PageId]:
        return await self._off_loop(self.alloc_bulk, n)

    async def free_bulk_async(self, ids: Iterable[PageId]) -> None:
        await self._off_loop(self.free_bulk, list(ids))

    async def alloc_protected_async(self) -> ProtectedPageId:
        return await self._off_loop(self.alloc_protected)

    async def free_protected_async(self, ppid: ProtectedPageId) -> None:
        await self._off_loop(self.free_protected, ppid)

    async def alloc_protected_bulk_async(self, n: int) -> list[ProtectedPageId]:
        return await self._off_loop(self.alloc_protected_bulk, n)

    async def free_protected_bulk_async(self, ids: Iterable[ProtectedPageId]) -> None:
        await self._off_loop(self.free_protected_bulk, list(ids))

    async def flush_async(self, ids: Iterable[PageId] | None = None) -> None:
        await self._off_loop(self.flush, None if ids is None else list(ids))
