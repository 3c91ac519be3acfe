"""Allocator protocols, so that generic code can take "any (bulk) page allocator".

``Pager`` satisfies ``BulkPageAllocator[PageId]``, ``pager.protected`` satisfies
``BulkPageAllocator[ProtectedPageId]`` and ``SubPageAllocator`` satisfies
``BulkPageAllocator[SubPageId]``. All are ``runtime_checkable``: ``isinstance`` checks that the
methods exist (not their signatures).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["BulkPageAllocator", "PageAllocator", "PageHandle"]

H = TypeVar("H")


@runtime_checkable
class PageHandle(Protocol):
    """A handle that gives views of its page through the allocator that made it."""

    def get(self, allocator: Any) -> memoryview:
        """Read-only view of the page in ``allocator``."""
        ...

    def get_mut(self, allocator: Any) -> Any:
        """Writable access to the page in ``allocator`` (a view, or a protected page's writer)."""
        ...


@runtime_checkable
class PageAllocator(Protocol[H]):
    """Hands out handles of type ``H`` one at a time."""

    def alloc(self) -> H:
        """Allocate one handle."""
        ...

    def free(self, handle: H, /) -> None:
        """Free one handle."""
        ...


@runtime_checkable
class BulkPageAllocator(PageAllocator[H], Protocol[H]):
    """Also allocates and frees many handles in one atomic call."""

    def alloc_bulk(self, n: int, /) -> list[H]:
        """Allocate ``n`` handles in one atomic call (all of them or none)."""
        ...

    def free_bulk(self, ids: Iterable[H], /) -> None:
        """Free every handle in ``ids`` in one atomic call (all of them or none)."""
        ...
