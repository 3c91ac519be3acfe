"""Page handles: small immutable values naming a page of one page size.

A handle is a tuple subclass so that hashing, equality and ordering run at C speed and the
value cannot be changed after creation. The tuple holds ``(index, page_size, kind)``; the kind
tag keeps a ``PageId`` from ever comparing equal to a ``ProtectedPageId`` with the same numbers.
"""

from __future__ import annotations

import gc
import inspect
from collections.abc import Iterable, Sequence
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import InvalidPageSize
from .format import MAX_PAGE_SIZE, MIN_PAGE_SIZE, valid_page_size

try:
    from . import _views
except ImportError:  # built without a C compiler
    _views = None  # type: ignore[assignment]

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


def checked_args(index: object, page_size: object) -> tuple[int, int]:
    """A handle's ``(index, page_size)``, or the exception the arguments deserve."""
    return _check_index(index), check_page_size(page_size)


checked_args.__qualname__ = "_Handle.__new__"  # what a TypeError for a missing argument names


class _TupleHandle(tuple):  # type: ignore[type-arg]
    """The tuple a handle is, made in Python: where mappedpages._views is not built."""

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
        return tuple.__new__(cls, (*checked_args(index, page_size), cls._KIND))


class _TuplePageId(_TupleHandle):
    __slots__ = ()
    _KIND = _KIND_PAGE


class _TupleProtectedPageId(_TupleHandle):
    __slots__ = ()
    _KIND = _KIND_PROTECTED


if TYPE_CHECKING:  # to a type checker, a handle is a tuple made from (index, page_size)

    class _HandleTuple(tuple[Any, ...]):
        def __new__(cls, index: int, page_size: int) -> Self: ...

    _PageIdBase: TypeAlias = object
    _ProtectedPageIdBase: TypeAlias = object
else:
    _HandleTuple = object  # the mixin below goes in front of the tuple class
    if _views is None:
        _PageIdBase, _ProtectedPageIdBase = _TuplePageId, _TupleProtectedPageId
    else:  # the same tuples, built in C (csrc/python/views_module.c)
        _PageIdBase, _ProtectedPageIdBase = _views.PageIdBase, _views.ProtectedPageIdBase


class _Handle(_HandleTuple):
    """What both kinds of handle add to their tuple."""

    __slots__ = ()
    # what inspect and help() show for the class: the C base's __new__ has no signature
    __signature__ = inspect.Signature(
        [
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for name in ("index", "page_size")
        ]
    )

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

    def __reduce__(self) -> tuple[type[Self], tuple[int, int]]:
        # every pickle protocol rebuilds through the class (protocols 0 and 1 would otherwise
        # call the tuple base with the whole tuple)
        return (type(self), (self[0], self[1]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self[0]}, page_size={self[1]})"

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: object) -> Self:
        return self


class PageId(_Handle, _PageIdBase):
    """A regular data page: ``PageId(index, page_size)``.

    Rebuilds a handle from a stored page number. Raises ``TypeError`` for an index that is not
    an int, ``ValueError`` for one outside 0 .. 2**64-1 and ``InvalidPageSize`` for a page size
    that is not a power of two from 1024 to 2**28. Whether the page exists is checked when the
    handle is used.
    """

    __slots__ = ()

    def get(self, allocator: Any) -> memoryview:
        """Read-only view of this page in ``allocator`` (a Pager, ReadOnlyPager or Snapshot):
        ``allocator.get_page(self)``, with its exceptions; ``TypeError`` for another object."""
        return _method(allocator, "get_page", "a Pager, ReadOnlyPager or Snapshot")(self)  # type: ignore[no-any-return]

    def get_mut(self, allocator: Pager) -> memoryview:
        """Writable view of this page in ``allocator`` (a Pager):
        ``allocator.get_page_mut(self)``, with its exceptions; ``TypeError`` for another
        object."""
        return _method(allocator, "get_page_mut", "a Pager")(self)  # type: ignore[no-any-return]


class ProtectedPageId(_Handle, _ProtectedPageIdBase):
    """A protected (copy-on-write) page: ``ProtectedPageId(index, page_size)``.

    The index numbers a slot of the protected-page directory, not a page of the file: the
    slot's content lives in one of two pages that change with every write. Raises as
    ``PageId`` does for a bad index or page size.
    """

    __slots__ = ()

    def get(self, allocator: Any) -> memoryview:
        """Read-only view of the committed content in ``allocator`` (a Pager, ReadOnlyPager or
        Snapshot): ``allocator.get_protected_page(self)``, with its exceptions."""
        get = _method(allocator, "get_protected_page", "a Pager, ReadOnlyPager or Snapshot")
        return get(self)  # type: ignore[no-any-return]

    def get_mut(self, allocator: Pager) -> ProtectedPageWriter:
        """A ``ProtectedPageWriter`` whose staged copy starts as the committed content:
        ``allocator.protected_writer(self)``, with its exceptions."""
        return _method(allocator, "protected_writer", "a Pager")(self)  # type: ignore[no-any-return]


if _views is None:

    def new_protected_id(index: int, page_size: int) -> ProtectedPageId:
        """Make a ProtectedPageId without validation, for slots that come from the directory."""
        return _new_tuple(ProtectedPageId, (index, page_size, _KIND_PROTECTED))

    def new_page_id(index: int, page_size: int) -> PageId:
        """Make a PageId without validation, for indices that come from a core."""
        return _new_tuple(PageId, (index, page_size, _KIND_PAGE))

    def _new_page_ids(indices: Iterable[int], page_size: int) -> list[PageId]:
        kinds = zip(indices, repeat(page_size), repeat(_KIND_PAGE))
        return list(map(tuple.__new__, repeat(PageId), kinds))

else:
    _views._register(PageId, checked_args)
    _new_handle, _new_handles = _views.new_handle, _views.new_handles

    def new_protected_id(index: int, page_size: int) -> ProtectedPageId:
        """Make a ProtectedPageId without validation, for slots that come from the directory."""
        return _new_handle(ProtectedPageId, index, page_size)  # type: ignore[no-any-return]

    def new_page_id(index: int, page_size: int) -> PageId:
        """Make a PageId without validation, for indices that come from a core."""
        return _new_handle(PageId, index, page_size)  # type: ignore[no-any-return]

    def _new_page_ids(indices: Iterable[int], page_size: int) -> list[PageId]:
        return _new_handles(PageId, indices, page_size)


def new_page_ids(indices: Sequence[int], page_size: int) -> list[PageId]:
    """Many PageIds at once, for indices that come from a core.

    The cyclic garbage collector is paused meanwhile: handles cannot form cycles, and building
    100,000 of them would otherwise set off over a hundred collections, tripling the cost.
    """
    paused = len(indices) > 1000 and gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _new_page_ids(indices, page_size)
    finally:
        if paused:
            gc.enable()
