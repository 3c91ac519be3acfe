"""The Pager API (API.md, "Pager"), on both cores."""

from __future__ import annotations

import os

import pytest

import mappedpages as mp
from helpers import check_ok


def test_create_and_properties(core: str, path: str) -> None:
    with mp.Pager.create(path, 4096) as p:
        assert p.page_size == 4096
        assert p.path == path
        assert p.page_count >= 3
        # pages 0-2 (identity, two commit records) and the bitmap's first leaf are in use
        assert p.free_page_count == p.page_count - 4
        assert list(p.iter_allocated_pages()) == []
        assert p.generation == 1
    check_ok(path)


def test_create_refuses_existing_path(core: str, path: str) -> None:
    mp.Pager.create(path).close()
    with pytest.raises(FileExistsError):
        mp.Pager.create(path)
    leftovers = set(os.listdir(os.path.dirname(path))) - {os.path.basename(path)}
    assert leftovers == {os.path.basename(path) + "-readers"}  # the reader table, no temp file


def test_open_missing_file(core: str, path: str) -> None:
    with pytest.raises(FileNotFoundError):
        mp.Pager.open(path)


@pytest.mark.parametrize(
    "bad", [0, 1, 512, 1000, 1023, 3000, 4097, 1 << 29, -4096, 4096.0, "4096", True]
)
def test_bad_page_sizes(core: str, path: str, bad: object) -> None:
    with pytest.raises((mp.InvalidPageSize, TypeError)) as info:
        mp.Pager.create(path, bad)  # type: ignore[arg-type]
    assert isinstance(info.value, mp.InvalidPageSize)
    assert isinstance(info.value, ValueError)
    assert not os.path.exists(path)


@pytest.mark.parametrize("size", [1024, 2048, 4096, 65536, 2 * 1024 * 1024])
def test_page_sizes_work(core: str, path: str, size: int) -> None:
    with mp.Pager.create(path, size, sync=False) as p:
        ids = [p.alloc() for _ in range(20)]
        for i, pid in enumerate(ids):
            p.get_page_mut(pid)[-8:] = i.to_bytes(8, "little")
    with mp.Pager.open(path) as p:
        assert p.page_size == size
        assert list(p.iter_allocated_pages()) == ids
        for i, pid in enumerate(ids):
            assert bytes(p.get_page(pid)[-8:]) == i.to_bytes(8, "little")
    check_ok(path)


def test_open_with_wrong_page_size(core: str, path: str) -> None:
    mp.Pager.create(path, 4096).close()
    with pytest.raises(mp.InvalidPageSize):
        mp.Pager.open(path, 1024)
    with pytest.raises(mp.InvalidPageSize):
        mp.Pager.open(path, 1000)
    with mp.Pager.open(path, 4096) as p:
        assert p.page_size == 4096


def test_alloc_never_returns_reserved_and_is_unique(pager: mp.Pager) -> None:
    ids = [pager.alloc() for _ in range(500)]
    indices = [int(i) for i in ids]
    assert min(indices) >= 3
    assert len(set(indices)) == 500
    assert all(i.page_size == 1024 for i in ids)
    assert pager.page_count >= 503


def test_free_and_reuse(pager: mp.Pager) -> None:
    a, b, c = pager.alloc(), pager.alloc(), pager.alloc()
    free_before = pager.free_page_count
    pager.free(b)
    assert pager.free_page_count == free_before + 1
    assert pager.alloc() == b  # the lowest free page comes back first
    assert list(pager.iter_allocated_pages()) == [a, b, c]


def test_reserved_out_of_bounds_double_free(pager: mp.Pager) -> None:
    for i in (0, 1, 2):
        with pytest.raises(mp.ReservedPage):
            pager.free(mp.PageId(i, 1024))
        with pytest.raises(mp.ReservedPage):
            pager.get_page(mp.PageId(i, 1024))
        with pytest.raises(mp.ReservedPage):
            pager.get_page_mut(mp.PageId(i, 1024))
    beyond = mp.PageId(pager.page_count, 1024)
    for op in (pager.free, pager.get_page, pager.get_page_mut):
        with pytest.raises(mp.OutOfBounds):
            op(beyond)
        with pytest.raises(IndexError):
            op(mp.PageId(2**63, 1024))
    pid = pager.alloc()
    pager.free(pid)
    with pytest.raises(mp.DoubleFree):
        pager.free(pid)
    never = mp.PageId(pager.page_count - 1, 1024)
    with pytest.raises(mp.DoubleFree):
        pager.free(never)


def test_page_size_mismatch(pager: mp.Pager) -> None:
    other = mp.PageId(5, 4096)
    for op in (pager.free, pager.get_page, pager.get_page_mut):
        with pytest.raises(mp.PageSizeMismatch):
            op(other)
    with pytest.raises(mp.PageSizeMismatch):
        pager.free_bulk([other])
    with pytest.raises(mp.PageSizeMismatch):
        other.get(pager)
    with pytest.raises(TypeError):
        pager.free(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pager.get_page((5, 1024))  # type: ignore[arg-type]


def test_bulk_alloc_and_free(pager: mp.Pager) -> None:
    assert pager.alloc_bulk(0) == []
    ids = pager.alloc_bulk(1000)
    assert len(set(ids)) == 1000
    assert sorted(ids) == ids
    assert list(pager.iter_allocated_pages()) == ids
    pager.free_bulk(iter(ids[::2]))
    assert list(pager.iter_allocated_pages()) == ids[1::2]
    with pytest.raises(ValueError):
        pager.alloc_bulk(-1)
    with pytest.raises(TypeError):
        pager.alloc_bulk(2.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    ["reserved", "beyond", "free", "duplicate", "mismatch"],
)
def test_free_bulk_is_atomic(pager: mp.Pager, bad: str) -> None:
    ids = pager.alloc_bulk(10)
    spare = pager.alloc()
    pager.free(spare)
    wrong = {
        "reserved": (mp.PageId(1, 1024), mp.ReservedPage),
        "beyond": (mp.PageId(10**9, 1024), mp.OutOfBounds),
        "free": (spare, mp.DoubleFree),
        "duplicate": (ids[3], mp.DoubleFree),
        "mismatch": (mp.PageId(3, 2048), mp.PageSizeMismatch),
    }[bad]
    before = (pager.free_page_count, list(pager.iter_allocated_pages()))
    with pytest.raises(wrong[1]):
        pager.free_bulk([*ids[:5], wrong[0], *ids[5:]])
    assert (pager.free_page_count, list(pager.iter_allocated_pages())) == before


def test_views(pager: mp.Pager) -> None:
    pid = pager.alloc()
    mut = pager.get_page_mut(pid)
    assert isinstance(mut, memoryview) and isinstance(mut, mp.MappedPage)
    assert len(mut) == 1024 and not mut.readonly
    mut[0:5] = b"hello"
    ro = pager.get_page(pid)
    assert ro.readonly
    assert bytes(ro[0:5]) == b"hello"
    with pytest.raises(TypeError):
        ro[0:1] = b"x"
    assert bytes(pid.get(pager)[:5]) == b"hello"
    pid.get_mut(pager)[0:1] = b"j"
    assert bytes(ro[:5]) == b"jello"


def test_views_survive_growth(pager: mp.Pager) -> None:
    first = pager.alloc()
    view = pager.get_page_mut(first)
    view[:4] = b"keep"
    start = pager.page_count
    ids = pager.alloc_bulk(20_000)  # crosses several bitmap groups and remaps
    assert pager.page_count > start
    assert bytes(view[:4]) == b"keep"
    view[:4] = b"more"  # the old view still writes into the same file
    assert bytes(pager.get_page(first)[:4]) == b"more"
    last = pager.get_page_mut(ids[-1])
    last[:3] = b"end"
    assert bytes(pager.get_page(ids[-1])[:3]) == b"end"


def test_numpy_zero_copy(pager: mp.Pager) -> None:
    import numpy as np

    pid = pager.alloc()
    arr = np.frombuffer(pager.get_page_mut(pid), dtype=np.uint32)
    arr[:] = np.arange(256, dtype=np.uint32)
    assert bytes(pager.get_page(pid)[4:8]) == (1).to_bytes(4, "little")


def test_iterator_invalidation(pager: mp.Pager) -> None:
    ids = pager.alloc_bulk(5)
    it = pager.iter_allocated_pages()
    assert next(it) == ids[0]
    pager.alloc()
    with pytest.raises(RuntimeError):
        next(it)
    it = pager.iter_allocated_pages()
    next(it)
    pager.free(ids[4])
    with pytest.raises(RuntimeError):
        next(it)
    it = pager.iter_allocated_pages()
    with pager.batch():
        pager.alloc()
    with pytest.raises(RuntimeError):
        next(it)


def test_iterator_spans_many_chunks(pager: mp.Pager) -> None:
    ids = pager.alloc_bulk(10_000)
    pager.free_bulk(ids[1::3])
    assert list(pager.iter_allocated_pages()) == [i for n, i in enumerate(ids) if n % 3 != 1]


def test_batch_commits_once_and_rolls_back(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        keep = p.alloc()
        with p.batch():
            a = p.alloc()
            b = p.alloc()
            p.free(keep)
        assert list(p.iter_allocated_pages()) == [a, b]
        before = (p.free_page_count, p.page_count, list(p.iter_allocated_pages()))
        with pytest.raises(KeyError), p.batch():
            p.alloc_bulk(30_000)  # grows the file inside the batch
            p.free(a)
            raise KeyError("boom")
        assert (p.free_page_count, p.page_count, list(p.iter_allocated_pages())) == before
        c = p.alloc()
        assert c not in (a, b)
    with mp.Pager.open(path) as p:
        assert list(p.iter_allocated_pages()) == sorted([a, b, c])
    check_ok(path)


def test_nested_batch_failure_dooms_outer(pager: mp.Pager) -> None:
    with pytest.raises(RuntimeError), pager.batch():
        pager.alloc()
        try:
            with pager.batch():
                pager.alloc()
                raise ValueError
        except ValueError:
            pass
    assert list(pager.iter_allocated_pages()) == []


def test_batch_then_reopen(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=True) as p, p.batch():
        ids = p.alloc_bulk(100)
        p.free_bulk(ids[:50])
        more = [p.alloc() for _ in range(10)]
    with mp.Pager.open(path) as p:
        assert list(p.iter_allocated_pages()) == sorted(ids[50:] + more)
    check_ok(path)


def test_close_makes_unavailable(core: str, path: str) -> None:
    p = mp.Pager.create(path, 1024)
    pid = p.alloc()
    view = p.get_page_mut(pid)
    ro = p.get_page(pid)
    it = p.iter_allocated_pages()
    p.close()
    p.close()  # idempotent
    for call in (
        p.alloc,
        lambda: p.free(pid),
        lambda: p.alloc_bulk(2),
        lambda: p.free_bulk([pid]),
        lambda: p.get_page(pid),
        lambda: p.get_page_mut(pid),
        lambda: p.page_count,
        lambda: p.free_page_count,
        p.flush,
        lambda: next(it),
        lambda: list(p.iter_allocated_pages()),
    ):
        with pytest.raises(mp.Unavailable):
            call()
    with pytest.raises(mp.Unavailable), p.batch():
        pass
    view[:3] = b"abc"  # views that outlive close() stay safe to use
    assert bytes(ro[:3]) == b"abc"


def test_close_inside_batch_discards_it(core: str, path: str) -> None:
    p = mp.Pager.create(path, 1024)
    with p.batch():
        p.alloc()
        p.close()
    with mp.Pager.open(path) as p:
        assert list(p.iter_allocated_pages()) == []


def test_flush(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        ids = p.alloc_bulk(3)
        for pid in ids:
            p.get_page_mut(pid)[:2] = b"ok"
        p.flush()
        p.flush(ids[:2])
        p.flush([])
        with pytest.raises(mp.OutOfBounds):
            p.flush([mp.PageId(10**6, 1024)])
        with pytest.raises(mp.ReservedPage):
            p.flush([mp.PageId(0, 1024)])
    with open(path, "rb") as f:
        data = f.read()
    assert data[int(ids[2]) * 1024 : int(ids[2]) * 1024 + 2] == b"ok"


@pytest.mark.parametrize("sync", [True, False])
def test_flushes_in_a_batch_ride_on_its_commit(core: str, path: str, sync: bool) -> None:
    """Inside a batch, flush(ids) and flush() are no barrier of their own: the batch's commit
    syncs the pages in its first barrier, before the record (even with sync=False, whose
    commits take none), so a batch takes two at most whatever it flushes. A batch that only
    flushes commits a generation of its own; one rolled back syncs as it ends."""
    met: list[str] = []
    with mp.Pager.create(path, 1024, sync=sync) as p:
        ids = p.alloc_bulk(20)
        p._core.set_barrier_hook(met.append)
        with p.batch():
            new = p.alloc_bulk(3)
            for pid in [*ids, *new]:
                p.get_page_mut(pid)[:2] = b"ok"
            p.flush(ids[:5])
            p.flush(new)
            p.flush()
            p.flush(ids[10:])
            assert met == []  # nothing synced yet
        assert met == ["barrier1", "barrier2"]
        met.clear()
        generation = p.generation
        with p.batch():
            p.flush(ids[:1])
        assert met == ["barrier1", "barrier2"] and p.generation == generation + 1
        met.clear()
        with pytest.raises(KeyError), p.batch():
            p.alloc()
            p.flush(ids[:1])
            raise KeyError
        assert met == [] and p.generation == generation + 1  # synced at once, no commit
        with pytest.raises(mp.OutOfBounds), p.batch():
            p.flush([mp.PageId(10**6, 1024)])
        p.flush(ids[:2])  # outside a batch: a barrier of its own
        assert met == ["flush"]
        p._core.set_barrier_hook(None)
    with open(path, "rb") as f:
        data = f.read()
    assert all(data[int(x) * 1024 : int(x) * 1024 + 2] == b"ok" for x in [*ids, *new])


def test_sync_false_state_survives_reopen(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024, sync=False) as p:
        ids = p.alloc_bulk(50)
        p.free(ids[0])
    with mp.Pager.open(path, sync=False) as p:
        assert list(p.iter_allocated_pages()) == ids[1:]


def test_sparse_growth(core: str, path: str) -> None:
    with mp.Pager.create(path, 4096, sync=False, preallocate=False) as p:
        p.alloc_bulk(5000)
        assert os.path.getsize(path) >= p.page_count * 4096
        blocks = os.stat(path).st_blocks * 512
        assert blocks < p.page_count * 4096  # untouched pages take no disk space
    check_ok(path)


def test_growth_is_bounded(core: str, path: str) -> None:
    from mappedpages.format import Geometry

    geo = Geometry(1024)
    # doubling below the cap, at most 1 GiB a step above it
    assert geo.grow_target(16, 1) == 32
    big = 64 * 1024 * 1024  # 64 GiB of 1 KiB pages
    assert big < geo.grow_target(big, 1) <= big + (1 << 20) + 2


def test_repr_and_context(pager: mp.Pager) -> None:
    assert "Pager" in repr(pager)
    with pytest.raises(TypeError):
        mp.Pager("x")  # type: ignore[call-arg]


def test_open_with_create_makes_a_missing_file_and_opens_an_existing_one(
    core: str, path: str
) -> None:
    with pytest.raises(FileNotFoundError):
        mp.Pager.open(path)
    with mp.Pager.open(path, 1024, create=True, sync=False) as p:  # made now, 1 KiB pages
        pid = p.alloc()
        assert p.page_size == 1024
    with mp.Pager.open(path, create=True) as p:  # opened as it is: the page size is the file's
        assert p.page_size == 1024 and list(p.iter_allocated_pages()) == [pid]
    with pytest.raises(mp.InvalidPageSize):
        mp.Pager.open(path, 4096, create=True)
    other = path + ".default"
    with mp.Pager.open(other, create=True) as p:
        assert p.page_size == 4096
