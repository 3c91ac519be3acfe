"""get_page's quick path and the handles built in C (mappedpages._views), against the Python
that explains every other case: the same answer for every page and every kind of argument, on
every reader and both cores; a thread that holds the GIL never waits on another thread's batch
in C; and the package without the C modules behaves the same."""

from __future__ import annotations

import inspect
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mappedpages as mp
from mappedpages import _views, handles
from mappedpages.views import PyViews, PyWritableViews


def _outcome(fn: Callable[[Any], memoryview], arg: object) -> object:
    """What ``fn(arg)`` gives: the bytes and writability of a view, or the exception's type."""
    try:
        view = fn(arg)
    except Exception as exc:
        return type(exc)
    return bytes(view), view.readonly, len(view)


def _every_argument(p: mp.PageReader) -> list[object]:
    n = p.page_count
    ps = p.page_size
    other = 2048 if ps != 2048 else 4096
    ids: list[object] = [mp.PageId(i, ps) for i in range(n + 3)]
    ids += [
        mp.PageId(3, other),
        mp.ProtectedPageId(3, ps),
        (3, ps, 0),
        3,
        None,
        mp.PageId(2**64 - 1, ps),
    ]
    return ids


def test_c_module_is_in_use() -> None:
    """The installed package runs the C quick path (the pure stand-ins are tested below)."""
    assert mp.Pager.get_page is _views.Views.get_page
    assert mp.Pager.get_page_mut is _views.WritableViews.get_page_mut
    assert mp.Pager.write_page is _views.WritableViews.write_page
    assert mp.PageId.__mro__[2] is _views.PageIdBase
    assert not hasattr(mp.ReadOnlyPager, "get_page_mut")
    assert not hasattr(mp.Snapshot, "get_page_mut")


def test_quick_path_answers_as_the_slow_one(core: str, tmp_path: Path) -> None:
    """Every page of a file with internal, free, pending, data and never-mapped pages, and
    every wrong argument: get_page (C) and _get_page (Python) give the same view or raise the
    same exception, on the writer, a snapshot and a ReadOnlyPager."""
    path = os.fspath(tmp_path / "v.mp")
    with mp.Pager.create(path, 1024, sync=False) as p:
        ids = p.alloc_bulk(3000)  # two bitmap leaves: tree blocks among the pages
        p.alloc_protected_bulk(5)
        for i, pid in enumerate(ids):
            p.get_page_mut(pid)[:4] = i.to_bytes(4, "little")
        with p.snapshot() as snap:
            p.free_bulk(ids[::7])  # pending while the snapshot lives
            with mp.ReadOnlyPager.open(path) as ro:
                kinds = {p._core.kind(i) for i in range(p.page_count)}
                assert kinds == {0, 1, 2, 3}, kinds
                for reader in (p, snap, ro):
                    for arg in _every_argument(reader):
                        quick = _outcome(reader.get_page, arg)
                        slow = _outcome(reader._get_page, arg)
                        assert quick == slow, (reader, arg)
                for arg in _every_argument(p):
                    quick = _outcome(p.get_page_mut, arg)
                    assert quick == _outcome(p._get_page_mut, arg), arg
        assert _outcome(p.get_page_mut, ids[1])[1] is False
        grown = p.alloc_bulk(5000)[-1]  # beyond the old mapping: remapped on the way
        assert bytes(p.get_page(grown)) == bytes(1024)
    with pytest.raises(mp.Unavailable):
        p.get_page(ids[1])
    with pytest.raises(mp.Unavailable):
        snap.get_page(ids[1])


def test_write_pages_quick_path_writes_and_refuses_as_the_slow_one(
    core: str, tmp_path: Path
) -> None:
    """write_page (C, pwrite) and _write_page (Python) on every page and every wrong argument,
    data and offset: the same bytes land, or the same exception is raised; and a page the
    record in force vouches for goes to the Python path, which retires the record first."""
    path = os.fspath(tmp_path / "w.mp")
    with mp.Pager.create(path, 1024) as p:
        ids = p.alloc_bulk(3000)
        p.alloc_protected_bulk(2)
        p.free_bulk(ids[::5])
        writes: list[tuple[object, object]] = [
            (b"abc", 0), (b"abc", 1021), (b"abc", 1022), (b"", 1024), (b"x" * 1024, 0),
            (b"x" * 1025, 0), (b"abc", -1), (b"abc", 2**70), (b"abc", 1.0), (b"abc", True),
            (bytearray(b"ba"), 7), (memoryview(b"0123")[::2], 0), ("str", 0), (None, 0),
        ]  # fmt: skip

        mapping = p._core.mapping()
        pristine = bytes(mapping)

        def outcome(fn: Callable[..., None], pid: object, data: object, off: object) -> object:
            mapping[:] = pristine  # the same start for both paths
            try:
                fn(pid, data, off)
            except Exception as exc:
                return type(exc)
            return bytes(mapping) == pristine, bytes(p.get_page(pid))  # type: ignore[arg-type]

        for arg in _every_argument(p)[::37] + _every_argument(p)[-6:]:
            for data, off in writes:
                quick = outcome(p.write_page, arg, data, off)
                assert quick == outcome(p._write_page, arg, data, off), (arg, data, off)
        p.write_page(ids[1], b"kw", offset=3)
        assert bytes(p.get_page(ids[1])[3:5]) == b"kw"
        with p.batch():
            new = p.alloc_bulk(2)
            for pid in new:
                p.write_page(pid, b"sealed")
            p.flush(new)
        met: list[str] = []
        p._core.set_barrier_hook(met.append)
        p.write_page(ids[1], b"elsewhere")  # not vouched for: the quick path, no barrier
        assert met == []
        p.write_page(new[0], b"again")  # vouched for: retired first
        assert met == ["retire"] and bytes(p.get_page(new[0])[:5]) == b"again"


def test_a_reader_thread_waits_for_another_threads_batch_without_holding_the_gil(
    core: str, tmp_path: Path
) -> None:
    """A thread's batch grows the file and holds its open state for 0.3 s: another thread's
    get_page of a page beyond the count it knew waits for the batch (it is in the core, the
    GIL released), while the batch's own thread goes on running Python; it then sees the
    batch's pages. With the GIL held in the wait, the batch could never end."""
    with mp.Pager.create(os.fspath(tmp_path / "b.mp"), 1024, sync=False) as p:
        first = p.alloc_bulk(10)
        opened, done = threading.Event(), threading.Event()
        order: list[str] = []
        grown: list[mp.PageId] = []

        def batch() -> None:
            with p.batch():
                grown.extend(p.alloc_bulk(5000))
                opened.set()
                end = time.monotonic() + 0.3
                spins = 0
                while time.monotonic() < end:  # Python runs here: the GIL is free to take
                    spins += 1
                order.append(f"batch ended after {spins > 0} spins")
            done.set()

        t = threading.Thread(target=batch)
        t.start()
        assert opened.wait(10)
        view = p.get_page(grown[-1])  # waits: the page is not this thread's to see yet
        order.append("read")
        t.join(10)
        assert order == ["batch ended after True spins", "read"]
        assert len(view) == 1024 and bytes(p.get_page(first[0])) == bytes(1024)


def test_handles_from_c_and_their_errors() -> None:
    pid = mp.PageId(5, 4096)
    assert type(pid) is mp.PageId and pid == (5, 4096, 0) and int(pid) == 5
    assert mp.ProtectedPageId(5, 4096) == (5, 4096, 1) != pid
    assert mp.PageId(index=5, page_size=4096) == pid
    assert mp.PageId(2**64 - 1, 1 << 28).index == 2**64 - 1
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(pid, protocol))
        assert back == pid and type(back) is mp.PageId
    for args, error in [
        ((-1, 4096), ValueError),
        ((2**64, 4096), ValueError),
        ((True, 4096), TypeError),
        ((5.0, 4096), TypeError),
        (("5", 4096), TypeError),
        ((5, 1000), mp.InvalidPageSize),
        ((5, 2**29), mp.InvalidPageSize),
        ((5, 4096.0), mp.InvalidPageSize),
        ((5,), TypeError),
        ((5, 4096, 0), TypeError),
    ]:
        with pytest.raises(error):
            mp.PageId(*args)
    made = handles.new_page_ids(list(range(3, 2003)), 1024)
    assert made == [mp.PageId(i, 1024) for i in range(3, 2003)]
    assert all(type(h) is mp.PageId for h in made)
    assert type(handles.new_protected_id(4, 1024)) is mp.ProtectedPageId
    with pytest.raises(TypeError):
        _views.new_handles(mp.PageId, ["3"], 1024)
    with pytest.raises(TypeError):
        _views.new_handles(int, [3], 1024)
    assert _views.new_handle(mp.ProtectedPageId, 9, 1024) == mp.ProtectedPageId(9, 1024)
    for args in ((int, 3, 1024), (mp.PageId, "3", 1024), (mp.PageId, 3, "1024"), (mp.PageId, 3)):
        with pytest.raises(TypeError):
            _views.new_handle(*args)
    before = sys.getrefcount(mp.PageId)
    many = [mp.PageId(i, 1024) for i in range(10000)]
    del many
    assert sys.getrefcount(mp.PageId) - before < 10  # the handles gave their class back


def test_the_python_stand_ins_are_what_the_c_types_are() -> None:
    """The slots and methods of the pure stand-ins match the C types' members and methods."""
    for py, c in ((PyViews, _views.Views), (PyWritableViews, _views.WritableViews)):
        public = {name for name in dir(c) if not name.startswith("__")}
        assert public <= set(dir(py)), public - set(dir(py))
    for name, py_method in (
        ("get_page", PyViews.get_page),
        ("get_page_mut", PyWritableViews.get_page_mut),
    ):
        c_doc = getattr(_views.WritableViews, name).__doc__
        assert inspect.cleandoc(c_doc) == inspect.cleandoc(py_method.__doc__ or ""), name


def test_without_the_c_modules(tmp_path: Path) -> None:
    """Installed without a C compiler (here: the C modules made unimportable), the package runs
    the same: handles, views, their errors, growth, snapshots."""
    script = textwrap.dedent(
        f"""
        import sys, pickle
        sys.modules["mappedpages._views"] = None
        sys.modules["mappedpages._mappedpages_c"] = None
        sys.modules["mappedpages._crc32c"] = None
        import warnings
        warnings.simplefilter("ignore")
        import mappedpages as mp
        from mappedpages import views
        assert mp.core == "python", mp.core
        assert mp.Pager.get_page is views.PyViews.get_page
        pid = mp.PageId(5, 1024)
        assert pid == (5, 1024, 0) and pickle.loads(pickle.dumps(pid)) == pid
        for bad in ((-1, 1024), (5, 1000), ("5", 1024)):
            try:
                mp.PageId(*bad)
            except (TypeError, ValueError):
                pass
            else:
                raise AssertionError(bad)
        with mp.Pager.create({os.fspath(tmp_path / "p.mp")!r}, 1024, sync=False) as p:
            ids = p.alloc_bulk(3000)
            p.get_page_mut(ids[-1])[:2] = b"ok"
            assert bytes(p.get_page(ids[-1])[:2]) == b"ok"
            p.write_page(ids[-2], b"copied", 3)
            assert bytes(p.get_page(ids[-2])[3:9]) == b"copied"
            for arg, error in ((mp.PageId(0, 1024), mp.ReservedPage),
                               (mp.PageId(10**6, 1024), mp.OutOfBounds),
                               (mp.PageId(5, 2048), mp.PageSizeMismatch), (5, TypeError)):
                for get in (p.get_page, p.get_page_mut, lambda x: p.write_page(x, b"")):
                    try:
                        get(arg)
                    except error:
                        pass
                    else:
                        raise AssertionError(arg)
            with p.snapshot() as s:
                assert bytes(s.get_page(ids[-1])[:2]) == b"ok"
            more = p.alloc_bulk(20000)
            assert len(p.get_page(more[-1])) == 1024
        try:
            p.get_page(ids[0])
        except mp.Unavailable:
            print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
