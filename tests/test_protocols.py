"""The allocator protocols and the ``pager.protected`` adapter."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import mappedpages as mp
from mappedpages.protocols import BulkPageAllocator, PageAllocator, PageHandle

H = TypeVar("H")


def churn(allocator: BulkPageAllocator[H], n: int) -> list[H]:
    """Generic code: works with any bulk allocator."""
    ids = allocator.alloc_bulk(n)
    one = allocator.alloc()
    allocator.free(one)
    allocator.free_bulk(ids[: n // 2])
    return ids[n // 2 :]


def views(handles: Iterable[PageHandle], allocator: object) -> list[bytes]:
    return [bytes(h.get(allocator)[:2]) for h in handles]


def test_pager_is_a_bulk_allocator(pager: mp.Pager) -> None:
    assert isinstance(pager, BulkPageAllocator)
    assert isinstance(pager, PageAllocator)
    kept = churn(pager, 6)
    assert list(pager.iter_allocated_pages()) == kept
    assert all(isinstance(h, PageHandle) for h in kept)
    assert views(kept, pager) == [b"\0\0"] * 3


def test_protected_adapter(pager: mp.Pager) -> None:
    adapter = pager.protected
    assert isinstance(adapter, BulkPageAllocator)
    kept = churn(adapter, 6)
    assert list(pager.iter_allocated_protected_pages()) == kept
    assert all(isinstance(h, mp.ProtectedPageId) for h in kept)
    assert views(kept, pager) == [b"\0\0"] * 3
    assert "protected pages" in repr(adapter)


def test_things_that_are_not_allocators() -> None:
    assert not isinstance(object(), PageAllocator)
    assert not isinstance([], BulkPageAllocator)
    assert not isinstance(3, PageHandle)
