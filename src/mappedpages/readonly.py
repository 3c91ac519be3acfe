"""ReadOnlyPager: a snapshot of one commit of a file, for any number of processes at once.

It takes no lock the writer waits for. It registers the generation it reads in the reader
table beside the file (_readertable.py), so that the writer, which never waits for it, writes
no page it can reach; ``refresh()`` moves it to the newest commit.
"""

from __future__ import annotations

import os
from typing import Any

from . import _backend, _v1
from . import format as fmt
from ._files import open_shared
from ._readertable import ReaderTable, refresh, register
from .aio import off_loop
from .errors import CorruptSuperblock
from .handles import check_page_size
from .reader import PageReader, StrPath, close_inherited

__all__ = ["ReadOnlyPager"]


class ReadOnlyPager(PageReader):
    """A read-only snapshot of a mappedpages file: ``ReadOnlyPager.open(path, page_size=None)``.

    Calling ``ReadOnlyPager(...)`` raises ``TypeError``. Any number of processes may hold one
    while a ``Pager`` commits; ``refresh()`` moves it to the newest commit, ``close()`` (or the
    end of a ``with`` block) releases it.

    It has no mutating methods; its views are read-only memoryviews (writing raises
    ``TypeError``). ``PageId.get`` and ``ProtectedPageId.get`` work with it.

    Without write access to the reader table (``<file>-readers``) it still opens, unregistered
    (``registered`` is False): it then reads the commit that was newest at open or refresh,
    but a writer running meanwhile may reuse the pages that commit's protected pages and
    freed pages used, so it may read them changed.
    """

    __slots__ = ("_fd", "_slot", "_table")
    _made_by = "ReadOnlyPager.open(path, page_size=None)"

    _fd: int
    _slot: int
    _table: ReaderTable | None

    @classmethod
    def open(cls, path: StrPath, page_size: int | None = None) -> ReadOnlyPager:
        """A snapshot of the newest commit; never fails because a writer is committing.

        Raises ``FileNotFoundError`` for a missing file, ``InvalidPageSize`` for a page size
        that is not the file's, ``CorruptSuperblock`` for a file that is not a mappedpages
        file, another ``MappedPageError`` for a damaged one, and ``Unavailable`` when the
        reader table has no free slot.
        """
        wanted = 0 if page_size is None else check_page_size(page_size)
        spath = os.fspath(path)
        fd = open_shared(spath)
        module = _backend.CORE
        table: ReaderTable | None = None
        slot = -1
        try:
            file_id = _file_id(fd)
            if file_id is not None:
                table = ReaderTable.open(spath, file_id, os.fstat(fd).st_mode)
            if table is not None:
                slot = table.claim()
                core = register(table, slot, module, fd, wanted)
            else:
                try:
                    core = module.open_snapshot(fd, wanted)
                except fmt.Version1:  # read as it is: no format-1 writer can be running
                    core = _v1.V1Snapshot(fd, wanted, module.crc32c)
        except BaseException:
            if table is not None:
                if slot >= 0:
                    table.release(slot)
                table.close()
            os.close(fd)
            raise
        self = object.__new__(cls)
        self._fd, self._table, self._slot = fd, table, slot
        self._setup(core, spath)
        return self

    @property
    def registered(self) -> bool:
        """Whether the writer sees this snapshot (it has a slot in the reader table)."""
        return self._table is not None

    def refresh(self) -> bool:
        """Move to the newest commit; returns True, or False when there was none since.

        Views taken before stay readable, but the commit they showed is no longer kept whole
        for them. After a change, iterators started before raise ``RuntimeError``, as after
        any change of state. On failure (say, the file was damaged meanwhile) the reader keeps
        the state it had. ``Unavailable`` once closed.
        """
        with self._lock:  # not in the middle of a backup from another thread
            self._check_live()
            if not refresh(self._table, self._slot, self._core):
                return False
            self._n = self._core.page_count
            self._version += 1
            self._remap()
            return True

    async def refresh_async(self) -> bool:
        """``refresh()``, its reads of the file off the event loop."""
        return await off_loop(self.refresh)

    def _closing(self, core: Any) -> None:
        try:
            core.close()
        finally:
            if self._table is not None:
                self._table.release(self._slot)
                self._table.close()
                self._table = None
            os.close(self._fd)

    def _forked(self) -> None:
        if self._table is not None:
            # its mapping holds a descriptor of its own: closed here, not left to the
            # collector, so the child holds nothing of the open file description whose lock
            # is the slot (a parent killed while the child lives on must not stay registered)
            self._table.close()
            self._table = None
        close_inherited(self._fd)


def _file_id(fd: int) -> bytes | None:
    """The file id page 0 names (None for a format-1 file never upgraded, or a file whose
    page 0 is damaged: opening the snapshot then says what is wrong)."""
    try:
        return fmt.Header(fd, 0, _backend.CORE.crc32c).file_id
    except CorruptSuperblock:
        return None
