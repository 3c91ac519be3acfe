"""User code that must type-check under mypy --strict (tests/test_static.py checks it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import mappedpages as mp

H = TypeVar("H")


def reserve(allocator: mp.BulkPageAllocator[H], n: int) -> list[H]:
    ids = allocator.alloc_bulk(n)
    allocator.free(ids[-1])
    return ids[:-1]


def release(allocator: mp.PageAllocator[H], ids: Iterable[H]) -> None:
    for handle in ids:
        allocator.free(handle)


def main(path: str) -> None:
    with mp.Pager.create(path, 4096) as pager:
        regular: list[mp.PageId] = reserve(pager, 4)
        protected: list[mp.ProtectedPageId] = reserve(pager.protected, 4)
        small = mp.SubPageAllocator(pager, 256)
        subs: list[mp.SubPageId] = reserve(small, 4)
        view: memoryview = regular[0].get_mut(pager)
        view[0:1] = b"x"
        with protected[0].get_mut(pager) as writer:
            writer.page_mut()[0:1] = b"y"
        release(small, subs)
        release(pager.protected, protected)
        release(pager, regular)
        total: int = mp.crc32c(view)
        print(total, pager.page_count)
