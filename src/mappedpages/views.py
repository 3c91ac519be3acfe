"""The quick path of ``get_page`` and ``get_page_mut``, beneath every reader.

``Views`` holds what the views need (``_n``, ``_ps``, ``_ro``, ``_rw``, ``_kind``) and answers
the common case: a ``PageId`` of the reader's page size, below ``_n``, on a page the core says
is not internal, inside the mapping. Everything else goes to the reader's ``_get_page`` (and a
Pager's ``_get_page_mut``), which explains a bad handle, waits for the core and remaps.

Where mappedpages._views is built, these are its C types (csrc/python/views_module.c), which
run the quick path without leaving C; the classes here do the same in Python otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._core_api import INTERNAL
from .handles import PageId

__all__ = ["Views", "WritableViews"]

try:
    from . import _views
except ImportError:  # built without a C compiler
    _views = None  # type: ignore[assignment]


class PyViews:
    """``Views`` in Python."""

    __slots__ = ("_kind", "_n", "_ps", "_ro", "_rw", "_watch", "_write_fd")

    # A page count no larger than the core's: page counts only grow, except on rollback and
    # shrink, which refresh it (a shrink zeroes it first, as closing and forking do). Checking
    # an index against it first keeps get_page off the core.
    _n: int
    _ps: int
    _ro: memoryview
    _rw: memoryview
    _kind: Any  # the core's kind(), as directly as the core offers it (see _core_api.Reading)
    _watch: int  # nonzero: get_page_mut always asks _get_page_mut (the Pager's sealed pages)
    _write_fd: int  # the file write_page writes (the C type's quick path only)

    def get_page(self, pid: PageId) -> memoryview:
        """Read-only ``memoryview`` of ``page_size`` bytes, straight into the mapping.

        Raises ``TypeError`` for anything but a ``PageId``, ``PageSizeMismatch`` for one of
        another page size, ``OutOfBounds`` beyond the file, ``ReservedPage`` for an internal
        page and ``Unavailable`` once closed. A free page may be viewed.
        """
        view = _quick(self, pid, self._ro)
        return self._get_page(pid) if view is None else view

    def _get_page(self, pid: PageId) -> memoryview:
        raise NotImplementedError  # the reader's

    def _set_fast_kind(self, function: int, core: int, owner: object) -> None:
        """The C core's kind as an address: of use to the C types only."""


def _quick(views: PyViews, pid: PageId, mapping: memoryview) -> memoryview | None:
    if type(pid) is PageId and pid[1] == views._ps:
        index: int = pid[0]
        if 3 <= index < views._n and 0 <= views._kind(index) != INTERNAL:
            start = index * views._ps
            if start + views._ps <= len(mapping):
                return mapping[start : start + views._ps]
    return None


class PyWritableViews(PyViews):
    """``WritableViews`` in Python."""

    __slots__ = ()

    def get_page_mut(self, pid: PageId) -> memoryview:
        """Writable ``memoryview`` of ``page_size`` bytes into the mapping; ``flush`` makes what
        is written durable. Raises as ``get_page`` does."""
        view = None if self._watch else _quick(self, pid, self._rw)
        return self._get_page_mut(pid) if view is None else view

    def write_page(self, pid: PageId, data: Any, offset: int = 0) -> None:
        """Copy ``data`` (any bytes-like object) into the data page ``pid`` at ``offset``;
        see docs/API.md. A page a batch allocated and wrote with write_page only is sealed by
        the batch's flush(ids): the batch's record vouches for it, and the commit takes one
        barrier. Raises as get_page_mut does, and ValueError when data does not fit."""
        self._write_page(pid, data, offset)

    def _set_fast_write(self, view: int, write: int) -> None:
        """The C core's checks before a writable view and a write, as addresses: of use to
        the C type only."""

    def _get_page_mut(self, pid: PageId) -> memoryview:
        raise NotImplementedError  # the Pager's

    def _write_page(self, pid: PageId, data: Any, offset: int) -> None:
        raise NotImplementedError  # the Pager's


if TYPE_CHECKING or _views is None:
    Views = PyViews
    WritableViews = PyWritableViews
else:
    Views = _views.Views
    WritableViews = _views.WritableViews
