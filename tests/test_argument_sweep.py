"""Every public call with arguments of every wrong kind: only MappedPageError, TypeError,
ValueError or OSError, at once (under a second), on both cores; and on closed objects."""

from __future__ import annotations

import faulthandler
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import mappedpages as mp
from helpers import check_ok, count

PS = 1024
ALLOWED = (mp.MappedPageError, TypeError, ValueError, OSError)
WRONG: list[object] = [
    None, "x", "", 1.5, float("nan"), True, b"x", bytearray(1), -1, 0, 2**63, 2**64,
    2**70, -(2**70), [], [None], [-1], [2**64], {}, object(), mp.PageId(5, 4096),
    mp.ProtectedPageId(0, 4096), mp.PageId(0, PS), mp.PageId(10**9, PS),
    mp.ProtectedPageId(10**9, PS),
]  # fmt: skip


@contextmanager
def _deadline() -> Iterator[None]:
    # a call that hangs ends the run with every thread's stack instead of hanging CI
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _sweep(calls: dict[str, Callable[[Any], object]]) -> list[str]:
    bad: list[str] = []
    for name, call in calls.items():
        for value in WRONG:
            start = time.perf_counter()
            try:
                call(value)
            except ALLOWED:
                pass
            except BaseException as e:  # what the sweep is for
                bad.append(f"{name}({value!r}): {type(e).__name__}: {e}")
            took = time.perf_counter() - start
            if took > 1.0:
                bad.append(f"{name}({value!r}) took {took:.1f} s")
            count("argument sweep calls")
    return bad


def _pager_calls(p: mp.Pager, path: str, spare: str) -> dict[str, Callable[[Any], object]]:
    pid = mp.PageId(3, PS)
    ppid = mp.ProtectedPageId(0, PS)
    sub = mp.SubPageAllocator(p, 256)
    return {
        "free": p.free,
        "free_bulk": p.free_bulk,
        "free_bulk([x])": lambda x: p.free_bulk([x]),
        "alloc_bulk": p.alloc_bulk,
        "alloc_protected_bulk": p.alloc_protected_bulk,
        "free_protected": p.free_protected,
        "free_protected_bulk": p.free_protected_bulk,
        "free_protected_bulk([x])": lambda x: p.free_protected_bulk([x]),
        "is_allocated": p.is_allocated,
        "get_page": p.get_page,
        "get_page_mut": p.get_page_mut,
        "get_protected_page": p.get_protected_page,
        "protected_writer": p.protected_writer,
        "flush": p.flush,
        "flush([x])": lambda x: p.flush([x]),
        "protected.alloc_bulk": p.protected.alloc_bulk,
        "protected.free": p.protected.free,
        "PageId(x, ps)": lambda x: mp.PageId(x, PS),
        "PageId(1, x)": lambda x: mp.PageId(1, x),
        "ProtectedPageId(x, ps)": lambda x: mp.ProtectedPageId(x, PS),
        "pid.get": pid.get,
        "pid.get_mut": pid.get_mut,
        "ppid.get": ppid.get,
        "ppid.get_mut": ppid.get_mut,
        "crc32c(x)": mp.crc32c,
        "crc32c(b, x)": lambda x: mp.crc32c(b"abc", x),
        "Pager.open(x)": lambda x: mp.Pager.open(x).close(),
        "Pager.open(path, x)": lambda x: mp.Pager.open(path, x).close(),
        "Pager.create(x)": lambda x: mp.Pager.create(x).close(),
        "Pager.create(spare, x)": lambda x: mp.Pager.create(spare, x).close(),
        "ReadOnlyPager.open(x)": lambda x: mp.ReadOnlyPager.open(x).close(),
        "ReadOnlyPager.open(path, x)": lambda x: mp.ReadOnlyPager.open(path, x).close(),
        "readers": mp.readers,
        "SubPageAllocator(p, x)": lambda x: mp.SubPageAllocator(p, x),
        "SubPageAllocator(x, 256)": lambda x: mp.SubPageAllocator(x, 256),
        "SubPageAllocator.restore": lambda x: mp.SubPageAllocator.restore(p, 256, [x]),
        "sub.alloc_bulk": sub.alloc_bulk,
        "sub.free": sub.free,
        "sub.free_bulk([x])": lambda x: sub.free_bulk([x]),
        "sub.get": sub.get,
        "sub.get_mut": sub.get_mut,
        "ConcurrentPager": mp.ConcurrentPager,
    }


def test_every_call_with_wrong_arguments(
    core: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # "x" and b"x" are paths too
    path = str(tmp_path / "sweep.mp")
    spare = str(tmp_path / "spare.mp")
    with _deadline(), mp.Pager.create(path, PS, sync=False) as p:
        kept = p.alloc_bulk(5)
        p.alloc_protected()
        bad = _sweep(_pager_calls(p, path, spare))
        with p.snapshot() as snap:
            bad += _sweep(
                {"snap.get_page": snap.get_page, "snap.get_prot": snap.get_protected_page}
            )
        assert set(kept) <= set(p.iter_allocated_pages())  # nothing it refused was done
    with _deadline(), mp.ReadOnlyPager.open(path) as ro:
        bad += _sweep({"ro.get_page": ro.get_page, "ro.get_protected_page": ro.get_protected_page})
    assert bad == []
    check_ok(path)


def test_every_call_on_closed_objects(core: str, tmp_path: Path) -> None:
    path = str(tmp_path / "closed.mp")
    p = mp.Pager.create(path, PS, sync=False)
    pid, ppid = p.alloc(), p.alloc_protected()
    snap = p.snapshot()
    sub = mp.SubPageAllocator(p, 256)
    sid = sub.alloc()
    ro = mp.ReadOnlyPager.open(path)
    for obj in (snap, ro, p):
        obj.close()
    calls: list[Callable[[], object]] = [
        p.alloc, lambda: p.free(pid), lambda: p.alloc_bulk(2), lambda: p.free_bulk([pid]),
        p.alloc_protected, lambda: p.free_protected(ppid), lambda: p.get_page(pid),
        lambda: p.get_page_mut(pid), lambda: p.get_protected_page(ppid),
        lambda: p.protected_writer(ppid), p.flush, p.snapshot, lambda: p.is_allocated(pid),
        p.iter_allocated_pages, p.iter_allocated_protected_pages, lambda: p.generation,
        lambda: p.batch().__enter__(), sub.alloc, lambda: sub.free(sid), lambda: sub.get(sid),
        lambda: ro.get_page(pid), ro.refresh, lambda: ro.generation,
        lambda: snap.get_page(pid), lambda: snap.get_protected_page(ppid),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(mp.MappedPageError):
            call()
    for obj in (snap, ro, p):
        obj.close()  # again: nothing


@pytest.mark.parametrize("seed", [-1, 2**32, 2**70, 1.5, True, None, "0"])
def test_a_bad_crc32c_seed_is_refused(core: str, seed: object) -> None:
    from mappedpages import _backend

    for crc32c in {mp.crc32c, _backend.CORE.crc32c}:  # the public one and the core's own
        for data in (b"abc", bytearray(b"abc"), memoryview(b"abc")):
            with pytest.raises(
                TypeError if not isinstance(seed, int) or seed is True else ValueError
            ):
                crc32c(data, seed)
    assert mp.crc32c(b"abc", 0xFFFFFFFF) == _backend.CORE.crc32c(b"abc", 0xFFFFFFFF)


@pytest.mark.parametrize("n", [2**48, 2**63, 2**64, 2**70])
def test_a_count_no_file_can_hold_is_refused_at_once(pager: mp.Pager, n: int) -> None:
    sub = mp.SubPageAllocator(pager, 256)
    gen = pager.generation
    calls = [pager.alloc_bulk, pager.alloc_protected_bulk]
    if n >= 2**63:  # 2**48 sub-pages take fewer parents than a file can hold
        calls.append(sub.alloc_bulk)
    for call in calls:
        start = time.perf_counter()
        with pytest.raises(ValueError, match="more than a file can hold"):
            call(n)
        assert time.perf_counter() - start < 1.0
    assert pager.generation == gen and pager.page_count < 100
