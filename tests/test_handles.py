"""Handle values (API.md, "Handles")."""

from __future__ import annotations

import copy
import pickle

import pytest

import mappedpages as mp


def test_page_id_value_semantics() -> None:
    a = mp.PageId(7, 4096)
    assert int(a) == 7 and a.index == 7 and a.page_size == 4096
    assert a == mp.PageId(7, 4096)
    assert hash(a) == hash(mp.PageId(7, 4096))
    assert a != mp.PageId(7, 1024)  # other page size: never equal
    assert a != mp.PageId(8, 4096)
    assert mp.PageId(3, 4096) < a < mp.PageId(9, 4096)
    assert sorted([mp.PageId(9, 4096), a, mp.PageId(3, 4096)])[1] is a
    assert {a: 1}[mp.PageId(7, 4096)] == 1
    assert repr(a) == "PageId(7, page_size=4096)"
    assert [10, 11, 12, 13, 14, 15, 16, 17][a] == 17  # usable as an index


def test_page_id_is_immutable() -> None:
    a = mp.PageId(7, 4096)
    with pytest.raises(AttributeError):
        a.index = 8  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.extra = 1  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(a)) == a
    assert copy.copy(a) is a and copy.deepcopy(a) is a


@pytest.mark.parametrize("index", [-1, 2**64, 1.5, "3", None])
def test_page_id_bad_index(index: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        mp.PageId(index, 4096)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1000, 512, 3 * 1024, 2**29])
def test_page_id_bad_page_size(size: int) -> None:
    with pytest.raises(mp.InvalidPageSize):
        mp.PageId(3, size)


def test_error_hierarchy() -> None:
    pairs = [
        (mp.InvalidPageSize, ValueError),
        (mp.PageSizeMismatch, TypeError),
        (mp.OutOfBounds, IndexError),
        (mp.ReservedPage, ValueError),
        (mp.FileLocked, BlockingIOError),
    ]
    for cls, base in pairs:
        assert issubclass(cls, mp.MappedPageError) and issubclass(cls, base)
    for name in (
        "CorruptSuperblock",
        "CorruptMetadata",
        "CorruptDirectoryIndex",
        "CorruptProtectedDirectory",
        "DoubleFree",
        "DirectoryFull",
        "Unavailable",
        "WouldBlock",
    ):
        assert issubclass(getattr(mp, name), mp.MappedPageError)
