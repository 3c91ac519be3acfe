"""What each barrier makes durable, read from the kernel's own page flags.

The power-loss harness takes a barrier as making everything written before it durable, so it
proves the order of barriers and records but would not notice a sync whose range left a page
out. Here the kernel says which pages of the mapping are still dirty (/proc/self/pagemap, then
/proc/kpageflags, which needs root): at each barrier of a copy-on-write step (new pages
written and flushed twice, a protected root switched, old pages freed, one batch), the data
pages the batch flushed are clean once its first barrier is done, before the record is
written; and after the commit nothing it wrote is dirty.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from pathlib import Path

import pytest

import mappedpages as mp
from mappedpages import format as fmt

_DIRTY = 1 << 4  # KPF_DIRTY


def _page_flags_readable() -> bool:
    try:
        with open("/proc/kpageflags", "rb") as f:
            f.read(8)
        return os.geteuid() == 0
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not _page_flags_readable(),
    reason="reading the kernel's page flags (/proc/kpageflags) needs root: NOT CHECKED here",
)


def _base(view: memoryview) -> int:
    probe = ctypes.c_char.from_buffer(view)
    try:
        return ctypes.addressof(probe)
    finally:
        del probe


def dirty(view: memoryview, offsets: list[int]) -> list[int]:
    """The byte offsets (of ``offsets``) whose page in the page cache is dirty."""
    base = _base(view)
    out = []
    pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
    flags = os.open("/proc/kpageflags", os.O_RDONLY)
    try:
        for off in offsets:
            # a read maps the page here: its flags are the cached page's, whoever wrote it
            _ = ctypes.c_char.from_address(base + off).value
            (entry,) = struct.unpack("<Q", os.pread(pagemap, 8, (base + off) // mmap.PAGESIZE * 8))
            assert entry >> 63, "a page just read is not in memory"
            (word,) = struct.unpack("<Q", os.pread(flags, 8, (entry & ((1 << 55) - 1)) * 8))
            if word & _DIRTY:
                out.append(off)
    finally:
        os.close(pagemap)
        os.close(flags)
    return out


def test_a_batch_flushes_its_data_in_the_first_barrier(core: str, tmp_path: Path) -> None:
    ps = 4096
    with mp.Pager.create(os.fspath(tmp_path / "r.mp"), ps) as p:
        root = p.alloc_protected()
        nodes = p.alloc_bulk(12)
        seen: dict[str, list[int]] = {}
        offsets: list[int] = []

        def at_barrier(kind: str) -> None:
            seen[kind] = dirty(p._rw, offsets)

        for step in range(4):
            p._core.set_barrier_hook(at_barrier)
            seen.clear()
            with p.batch():
                new = p.alloc_bulk(12)
                offsets[:] = [int(pid) * ps for pid in new]
                for i, pid in enumerate(new):
                    p.get_page_mut(pid)[:] = bytes([step + i]) * ps
                p.flush(new[:6])
                p.flush(new[6:])
                with root.get_mut(p) as w:
                    w.page_mut()[:8] = int(new[0]).to_bytes(8, "little")
                p.free_bulk(nodes)
            p._core.set_barrier_hook(None)
            assert seen["barrier1"] == offsets  # all written, none synced yet
            assert seen["barrier2"] == []  # the first barrier synced every flushed page
            assert dirty(p._rw, offsets) == []
            nodes = new


def test_flush_outside_a_batch_and_a_one_barrier_commit_leave_nothing_dirty(
    core: str, tmp_path: Path
) -> None:
    ps = 4096
    with mp.Pager.create(os.fspath(tmp_path / "f.mp"), ps) as p:
        ids = p.alloc_bulk(64)
        p.flush()
        offsets = [int(pid) * ps for pid in ids]
        assert dirty(p._core.mapping(), offsets) == []
        for pid in ids[::3]:
            p.get_page_mut(pid)[:4] = b"data"
        view = p._core.mapping()  # the mapping as it is now (the file grew)
        # (a page's neighbours in its folio may be dirty with it: the kernel dirties folios)
        assert set(offsets[::3]) <= set(dirty(view, offsets))
        p.flush(ids[::3])  # one msync over their span
        assert dirty(view, offsets) == []
        ppid = p.alloc_protected()
        with ppid.get_mut(p) as w:
            w.page_mut()[:4] = b"prot"
        ident, _ = fmt.unpack_identity(bytes(view[: fmt.IDENTITY.size + 4]))
        records = [ident.record_0 * ps, ident.record_1 * ps]
        written = [p._core.ppage(int(ppid)) * ps, *records]
        assert dirty(view, written) == []  # the commit's one barrier took its content page
        view.release()
