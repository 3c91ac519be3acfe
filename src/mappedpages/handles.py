"""Page handles: small immutable values naming a page of one page size.

A handle is a tuple subclass so that hashing, equality and ordering run at C speed and the
value cannot be changed after creation. The tuple holds ``(index, page_size, kind)``; the kind
tag keeps a ``PageId`` from ever comparing equal to a ``ProtectedPageId`` with the same numbers.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from .errors import InvalidPageSize
from .format import MAX_PAGE_SIZE, MIN_PAGE_SIZE, valid_page_size

if TYPE_CHECKING:
    from typing_extensions import Self

    from .pager import Pager
    from .protected import ProtectedPageWriter

__all__ = ["MappedPage", "PageId", "ProtectedPageId"]

MappedPage = memoryview
"""The type of a page view: a memoryview of exactly ``page_size`` bytes into the mapping."""

_KIND_PAGE = 0
_KIND_PROTECTED = 1
_INDEX_MAX = (1 << 64) - 1
_PAGE_SIZES = frozenset(
    1 << k for k in range(MIN_PAGE_SIZE.bit_length() - 1, MAX_PAGE_SIZE.bit_length())
)
_new_tuple: Any = tuple.__new__


def _check_index(index: object) -> int:
    if type(index) is not int:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"a page index must be an int, not {type(index).__name__}")
        index = int(index)
    if index < 0 or index >= 1 << 64:
        raise ValueError(f"page index {index} is outside 0 .. 2**64-1")
    return index


def _method(obj: object, name: str, what: str) -> Any:
    """``obj.name``, or the TypeError a wrong argument deserves (not an AttributeError)."""
    try:
        return getattr(obj, name)
    except AttributeError:
        raise TypeError(f"expected {what}, got {type(obj).__name__}") from None


def check_count(n: object) -> int:
    """The ``n`` of a bulk call: an int >= 0."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    return n


def check_page_size(page_size: object) -> int:
    if not valid_page_size(page_size):
        raise InvalidPageSize(
            f"page size {page_size!r} is not a power of two between 1024 and 2**28"
        )
    assert isinstance(page_size, int)
    return page_size


class _Handle(tuple):  # type: ignore[type-arg]
    __slots__ = ()
    _KIND = -1

    def __new__(cls, index: int, page_size: int) -> Self:
        # an exact int and a valid page size, as a stored number comes back, take no calls
        # (the full checks cost half the handle); anything else is explained below
        if (
            type(index) is int
            and 0 <= index <= _INDEX_MAX
            and type(page_size) is int
            and page_size in _PAGE_SIZES
        ):
            return _new_tuple(cls, (index, page_size, cls._KIND))  # type: ignore[no-any-return]
        return tuple.__new__(cls, (_check_index(index), check_page_size(page_size), cls._KIND))

    index: int = property(  # type: ignore[assignment]
        itemgetter(0), doc="The page number (also ``int(handle)``)."
    )
    page_size: int = property(  # type: ignore[assignment]
        itemgetter(1), doc="The page size this handle belongs to."
    )

    def __int__(self) -> int:
        return self[0]  # type: ignore[no-any-return]

    __index__ = __int__

    def __getnewargs__(self) -> tuple[int, int]:
        return (self[0], self[1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self[0]}, page_size={self[1]})"

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: object) -> Self:
        return self


class PageId(_Handle):
    """A regular data page: ``PageId(index, page_size)``.

    Rebuilds a handle from a stored page number. Raises ``TypeError`` for an index that is not
    an int, ``ValueError`` for one outside 0 .. 2**64-1 and ``InvalidPageSize`` for a page size
    that is not a power of two from 1024 to 2**28. Whether the page exists is checked when the
    handle is used.
    """

    __slots__ = ()
    _KIND = _KIND_PAGE

    def get(self, allocator: Any) -> memoryview:
        """Read-only view of this page in ``allocator`` (a Pager, ReadOnlyPager or Snapshot):
        ``allocator.get_page(self)``, with its exceptions; ``TypeError`` for another object."""
        return _method(allocator, "get_page", "a Pager, ReadOnlyPager or Snapshot")(self)  # type: ignore[no-any-return]

    def get_mut(self, allocator: Pager) -> memoryview:
        """Writable view of this page in ``allocator`` (a Pager):
        ``allocator.get_page_mut(self)``, with its exceptions; ``TypeError`` for another
        object."""
        return _method(allocator, "get_page_mut", "a Pager")(self)  # type: ignore[no-any-return]


class ProtectedPageId(_Handle):
    """A protected (copy-on-write) page: ``ProtectedPageId(index, page_size)``.

    The index numbers a slot of the protected-page directory, not a page of the file: the
    slot's content lives in one of two pages that change with every write. Raises as
    ``PageId`` does for a bad index or page size.
    """

    __slots__ = ()
    _KIND = _KIND_PROTECTED

    def get(self, allocator: Any) -> memoryview:
        """Read-only view of the committed content in ``allocator`` (a Pager, ReadOnlyPager or
        Snapshot): ``allocator.get_protected_page(self)``, with its exceptions."""
        get = _method(allocator, "get_protected_page", "a Pager, ReadOnlyPager or Snapshot")
        return get(self)  # type: ignore[no-any-return]

    def get_mut(self, allocator: Pager) -> ProtectedPageWriter:
        """A ``ProtectedPageWriter`` whose staged copy starts as the committed content:
        ``allocator.protected_writer(self)``, with its exceptions."""
        return _method(allocator, "protected_writer", "a Pager")(self)  # type: ignore[no-any-return]


def new_protected_id(index: int, page_size: int, _new: Any = tuple.__new__) -> ProtectedPageId:
    """Make a ProtectedPageId without validation, for slots that come from the directory."""
    return _new(ProtectedPageId, (index, page_size, _KIND_PROTECTED))  # type: ignore[no-any-return]


def new_page_id(index: int, page_size: int, _new: Any = tuple.__new__) -> PageId:
    """Make a PageId without validation, for indices that come from a core."""
    return _new(PageId, (index, page_size, _KIND_PAGE))  # type: ignore[no-any-return]


def new_page_ids(indices: Sequence[int], page_size: int) -> list[PageId]:
    """Many PageIds at once, for indices that come from a core.

    The cyclic garbage collector is paused meanwhile: handles cannot form cycles, and building
    100,000 of them would otherwise set off over a hundred collections, tripling the cost.
    """
    paused = len(indices) > 1000 and gc.isenabled()
    if paused:
        gc.disable()
    try:
        kinds = zip(indices, repeat(page_size), repeat(_KIND_PAGE))
        return list(map(tuple.__new__, repeat(PageId), kinds))
    finally:
        if paused:
            gc.enable()
