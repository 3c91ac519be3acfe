"""SubPageAllocator and SubPageId, on both cores (every test takes ``pager`` or ``core``)."""

from __future__ import annotations

import copy
import pickle
import random
from collections.abc import Callable
from typing import Any

import pytest

import mappedpages as mp
from mappedpages import subpages
from mappedpages.protocols import BulkPageAllocator, PageHandle
from mappedpages.subpages import SubPageAllocator, SubPageId

PS = 1024  # the page size of the ``pager`` fixture


def allocated(pager: mp.Pager) -> list[mp.PageId]:
    return list(pager.iter_allocated_pages())


def pattern(sid: SubPageId, size: int, salt: int = 0) -> bytes:
    seed = (sid.parent.index * 131 + sid.slot * 7 + salt) & 0xFF
    return bytes((seed + i) & 0xFF for i in range(size))


# -- construction -------------------------------------------------------------------------


@pytest.mark.parametrize("sub_size", [0, -16, 3, 24, 100, 1000, 1024, 2048, 8, 4, 1])
def test_bad_sub_size(pager: mp.Pager, sub_size: int) -> None:
    with pytest.raises(mp.InvalidPageSize):
        SubPageAllocator(pager, sub_size)


@pytest.mark.parametrize("sub_size", [16.0, "64", None, True])
def test_sub_size_not_an_int(pager: mp.Pager, sub_size: Any) -> None:
    with pytest.raises(mp.InvalidPageSize):
        SubPageAllocator(pager, sub_size)


def test_not_a_pager(core: str) -> None:
    with pytest.raises(TypeError):
        SubPageAllocator(object(), 64)  # type: ignore[arg-type]


def test_closed_pager(pager: mp.Pager) -> None:
    pager.close()
    with pytest.raises(mp.Unavailable):
        SubPageAllocator(pager, 64)


@pytest.mark.parametrize(("sub_size", "slots"), [(16, 64), (64, 16), (256, 4), (512, 2)])
def test_properties(pager: mp.Pager, sub_size: int, slots: int) -> None:
    sub = SubPageAllocator(pager, sub_size)
    assert sub.sub_size == sub_size
    assert sub.page_size == PS
    assert sub.slots_per_page == slots
    assert sub.pager is pager
    assert repr(sub) == f"<SubPageAllocator sub_size={sub_size} page_size={PS} parents=0 used=0>"
    sub.alloc()
    assert "parents=1 used=1" in repr(sub)


def test_satisfies_protocols(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 64)
    assert isinstance(sub, BulkPageAllocator)
    assert isinstance(sub.alloc(), PageHandle)


# -- allocation and views -----------------------------------------------------------------


def test_alloc_fills_a_parent_before_taking_another(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 256)
    first = [sub.alloc() for _ in range(4)]
    assert len(allocated(pager)) == 1
    parent = first[0].parent
    assert [s.parent for s in first] == [parent] * 4
    assert [s.slot for s in first] == [0, 1, 2, 3]
    assert all(s.sub_size == 256 for s in first)
    fifth = sub.alloc()
    assert fifth.parent != parent
    assert fifth.slot == 0
    assert allocated(pager) == sorted([parent, fifth.parent])


def test_alloc_reuses_the_lowest_free_slot(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 256)
    ids = [sub.alloc() for _ in range(8)]  # two full parents
    sub.free(ids[6])
    sub.free(ids[2])
    sub.free(ids[1])
    assert sub.alloc() == ids[1]
    assert sub.alloc() == ids[2]
    assert sub.alloc() == ids[6]
    assert len(allocated(pager)) == 2
    assert sub.alloc().parent not in {ids[0].parent, ids[4].parent}


def test_views(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 128)
    ids = [sub.alloc() for _ in range(20)]
    assert len(set(ids)) == 20
    for sid in ids:
        view = sid.get_mut(sub)
        assert len(view) == 128
        assert not view.readonly
        view[:] = pattern(sid, 128)
    for sid in ids:
        view = sid.get(sub)
        assert len(view) == 128
        assert view.readonly
        assert bytes(view) == pattern(sid, 128)
        assert bytes(sub.get(sid)) == bytes(sub.get_mut(sid)) == pattern(sid, 128)
        start = sid.slot * 128
        assert bytes(pager.get_page(sid.parent)[start : start + 128]) == pattern(sid, 128)
    with pytest.raises(TypeError):
        ids[0].get(sub)[0] = 1


def test_write_through_get_mut_is_visible_through_get(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 64)
    a, b = sub.alloc(), sub.alloc()
    sub.get_mut(a)[:] = b"\x11" * 64
    sub.get_mut(b)[:] = b"\x22" * 64
    assert bytes(sub.get(a)) == b"\x11" * 64
    assert bytes(sub.get(b)) == b"\x22" * 64
    sub.get_mut(a)[63] = 0x33
    assert sub.get(a)[63] == 0x33
    assert bytes(sub.get(b)) == b"\x22" * 64


def test_parent_returned_when_its_last_sub_page_is_freed(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 256)
    free_before = pager.free_page_count
    ids = [sub.alloc() for _ in range(4)]
    assert pager.free_page_count == free_before - 1
    for sid in ids[:3]:
        sub.free(sid)
        assert allocated(pager) == [ids[0].parent]
    sub.free(ids[3])
    assert allocated(pager) == []
    assert pager.free_page_count == free_before
    assert "parents=0 used=0" in repr(sub)


def test_get_of_a_free_sub_page(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 256)
    a, b = sub.alloc(), sub.alloc()
    sub.free(b)
    with pytest.raises(mp.OutOfBounds):
        sub.get(b)
    with pytest.raises(mp.OutOfBounds):
        b.get_mut(sub)
    sub.free(a)
    with pytest.raises(mp.OutOfBounds):
        sub.get(a)


# -- free errors --------------------------------------------------------------------------


def test_free_errors(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 256)
    a, b = sub.alloc(), sub.alloc()
    parent = a.parent
    sub.free(b)
    with pytest.raises(mp.DoubleFree):
        sub.free(b)
    with pytest.raises(mp.OutOfBounds):
        sub.free(SubPageId(mp.PageId(parent.index + 100, PS), 0, 256))
    with pytest.raises(mp.OutOfBounds):
        sub.free(SubPageId(parent, 4, 256))  # beyond the 4 slots of a page
    with pytest.raises(TypeError):
        sub.free(parent)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sub.free((parent, 0, 256, 2))  # type: ignore[arg-type]
    with pytest.raises(mp.PageSizeMismatch):
        sub.free(SubPageId(parent, 0, 128))
    with pytest.raises(mp.PageSizeMismatch):
        sub.free(SubPageId(mp.PageId(parent.index, 4096), 0, 256))
    assert bytes(sub.get(a)) == bytes(256)  # still allocated after all of that
    sub.free(a)
    with pytest.raises(mp.DoubleFree):  # its parent went back to the pager
        sub.free(a)
    assert allocated(pager) == []


def test_free_bulk(pager: mp.Pager, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = SubPageAllocator(pager, 256)
    ids = sub.alloc_bulk(10)  # parents: 4 + 4 + 2 slots
    parents = list(dict.fromkeys(s.parent for s in ids))
    assert len(parents) == 3
    calls: list[list[mp.PageId]] = []
    real = mp.Pager.free_bulk

    def counting(self: mp.Pager, pids: Any) -> None:
        pids = list(pids)
        calls.append(pids)
        real(self, pids)

    monkeypatch.setattr(mp.Pager, "free_bulk", counting)
    sub.free_bulk(s for s in ids[:3])  # any iterable; no parent emptied
    assert calls == []
    sub.free_bulk([ids[3], ids[8], ids[9], ids[4]])  # empties the first and last parents
    assert len(calls) == 1
    assert sorted(calls[0]) == sorted([parents[0], parents[2]])
    assert allocated(pager) == [parents[1]]
    sub.free_bulk([])
    assert len(calls) == 1
    assert "parents=1 used=3" in repr(sub)


def test_free_bulk_is_atomic(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 256)
    ids = sub.alloc_bulk(6)
    sub.free(ids[5])
    state = repr(sub)
    pages = allocated(pager)
    bad: list[Any] = [
        ids[5],  # already free
        SubPageId(mp.PageId(ids[0].parent.index + 50, PS), 0, 256),
        SubPageId(ids[0].parent, 7, 256),
        ids[0].parent,
        "x",
        SubPageId(ids[0].parent, 0, 512),
    ]
    errors = [mp.DoubleFree, mp.OutOfBounds, mp.OutOfBounds, TypeError, TypeError]
    errors.append(mp.PageSizeMismatch)
    for wrong, error in zip(bad, errors, strict=True):
        with pytest.raises(error):
            sub.free_bulk([ids[0], ids[4], wrong, ids[1]])
        assert repr(sub) == state
        assert allocated(pager) == pages
    with pytest.raises(mp.DoubleFree):
        sub.free_bulk([ids[0], ids[4], ids[0]])
    with pytest.raises(mp.DoubleFree):
        sub.free_bulk([ids[4], ids[4]])  # would otherwise empty the second parent
    assert repr(sub) == state
    assert allocated(pager) == pages
    for sid in ids[:5]:
        sub.get(sid)
    sub.free_bulk(ids[:5])
    assert allocated(pager) == []


# -- alloc_bulk ---------------------------------------------------------------------------


def test_alloc_bulk_across_parents(pager: mp.Pager, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = SubPageAllocator(pager, 256)
    first = sub.alloc()
    calls: list[int] = []
    real = mp.Pager.alloc_bulk

    def counting(self: mp.Pager, n: int) -> list[mp.PageId]:
        calls.append(n)
        return real(self, n)

    monkeypatch.setattr(mp.Pager, "alloc_bulk", counting)
    ids = sub.alloc_bulk(10)
    assert calls == [2]  # 3 slots left in the first parent, then 7 in two new ones
    assert len(set(ids)) == 10
    assert first not in ids
    assert ids[:3] == [SubPageId(first.parent, slot, 256) for slot in (1, 2, 3)]
    assert ids == sorted(ids)
    assert len({s.parent for s in ids}) == 3
    assert len(allocated(pager)) == 3
    # the last new parent has one slot left: filled before anything new is taken
    assert sub.alloc_bulk(1)[0].parent == ids[-1].parent
    assert calls == [2]
    assert sub.alloc_bulk(0) == []
    assert calls == [2]
    for sid in [first, *ids]:
        sub.get_mut(sid)[:] = pattern(sid, 256)
    for sid in [first, *ids]:
        assert bytes(sub.get(sid)) == pattern(sid, 256)


def test_alloc_bulk_bad_n(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 256)
    for n in (1.0, "2", None, True):
        with pytest.raises(TypeError):
            sub.alloc_bulk(n)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sub.alloc_bulk(-1)
    assert allocated(pager) == []


def _holey(pager: mp.Pager) -> tuple[SubPageAllocator, list[SubPageId]]:
    """An allocator with two parents and three free slots among them."""
    sub = SubPageAllocator(pager, 256)
    ids = sub.alloc_bulk(8)
    sub.free_bulk([ids[1], ids[5], ids[6]])
    return sub, [ids[1], ids[5], ids[6]]


def test_alloc_bulk_rolls_back_when_the_pager_fails(
    pager: mp.Pager, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub, holes = _holey(pager)
    state, free, pages = repr(sub), pager.free_page_count, allocated(pager)

    def boom(self: mp.Pager, n: int) -> list[mp.PageId]:
        raise OSError("no space")

    monkeypatch.setattr(mp.Pager, "alloc_bulk", boom)
    with pytest.raises(OSError, match="no space"):
        sub.alloc_bulk(20)
    assert repr(sub) == state
    assert pager.free_page_count == free
    assert allocated(pager) == pages
    for sid in holes:
        with pytest.raises(mp.OutOfBounds):
            sub.get(sid)
    monkeypatch.undo()
    # the holes are still free, and still handed out first
    assert sub.alloc_bulk(3) == holes
    assert allocated(pager) == pages


def test_alloc_bulk_rolls_back_after_the_pager_allocated(
    pager: mp.Pager, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub, holes = _holey(pager)
    state, free, pages = repr(sub), pager.free_page_count, allocated(pager)
    real = subpages._new_sub_id
    made: list[int] = []

    def failing(parent: mp.PageId, slot: int, sub_size: int) -> SubPageId:
        made.append(slot)
        if len(made) > 6:  # the three holes, then a few slots of the new parents
            raise MemoryError
        return real(parent, slot, sub_size)

    monkeypatch.setattr(subpages, "_new_sub_id", failing)
    with pytest.raises(MemoryError):
        sub.alloc_bulk(12)
    monkeypatch.undo()
    assert len(made) == 7
    assert repr(sub) == state
    assert pager.free_page_count == free
    assert allocated(pager) == pages
    assert sub.alloc_bulk(3) == holes


# -- restore ------------------------------------------------------------------------------


def test_restore_rebuilds_the_same_state(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 128)
    ids = sub.alloc_bulk(30)
    rng = random.Random(7)
    gone = rng.sample(ids, 9)
    sub.free_bulk(gone)
    live = [s for s in ids if s not in gone]
    for sid in live:
        sub.get_mut(sid)[:] = pattern(sid, 128)
    free, pages = pager.free_page_count, allocated(pager)

    again = SubPageAllocator.restore(pager, 128, reversed(live))
    assert repr(again) == repr(sub)
    assert pager.free_page_count == free  # restore neither allocates nor frees
    assert allocated(pager) == pages
    for sid in live:
        assert bytes(again.get(sid)) == pattern(sid, 128)
    holes = sorted(s for s in gone if s.parent in pages)
    assert again.alloc_bulk(len(holes)) == holes == sub.alloc_bulk(len(holes))
    more = again.alloc_bulk(20)
    assert not set(more) & set(live)
    assert not set(more) & set(holes)
    for sid in live:
        assert bytes(again.get(sid)) == pattern(sid, 128)


def test_restore_of_nothing(pager: mp.Pager) -> None:
    sub = SubPageAllocator.restore(pager, 64, [])
    assert "parents=0 used=0" in repr(sub)
    assert sub.alloc().slot == 0


def test_restore_rejects_bad_ids(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 256)
    a, b = sub.alloc(), sub.alloc()
    stray = pager.alloc()
    pager.free(stray)  # inside the file, but not allocated
    free = pager.free_page_count
    cases: list[tuple[list[Any], type[BaseException]]] = [
        ([a, "x"], TypeError),
        ([a, a.parent], TypeError),
        ([a, SubPageId(a.parent, 1, 128)], mp.PageSizeMismatch),
        ([SubPageId(mp.PageId(a.parent.index, 2048), 0, 256)], mp.PageSizeMismatch),
        ([a, b, a], mp.DoubleFree),
        ([SubPageId(a.parent, 4, 256)], mp.OutOfBounds),
        ([SubPageId(stray, 0, 256)], mp.OutOfBounds),
        ([SubPageId(mp.PageId(10**6, PS), 0, 256)], mp.OutOfBounds),
        ([SubPageId(mp.PageId(0, PS), 0, 256)], mp.ReservedPage),
    ]
    for ids, error in cases:
        with pytest.raises(error):
            SubPageAllocator.restore(pager, 256, ids)
    with pytest.raises(mp.InvalidPageSize):
        SubPageAllocator.restore(pager, 8, [])
    assert pager.free_page_count == free
    assert allocated(pager) == [a.parent]


def test_data_survives_reopen_through_restore(pager: mp.Pager, path: str) -> None:
    sub = SubPageAllocator(pager, 64)
    ids = sub.alloc_bulk(40)
    sub.free_bulk(ids[5:9])
    live = ids[:5] + ids[9:]
    for sid in live:
        sub.get_mut(sid)[:] = pattern(sid, 64, salt=3)
    record = pickle.dumps(live)  # the caller's own record of its sub-pages
    pager.close()

    reopened = mp.Pager.open(path, sync=False)
    try:
        restored: list[SubPageId] = pickle.loads(record)
        assert restored == live
        again = SubPageAllocator.restore(reopened, 64, restored)
        assert "parents=3 used=36" in repr(again)
        for sid in restored:
            assert bytes(again.get(sid)) == pattern(sid, 64, salt=3)
        fresh = again.alloc_bulk(20)
        assert fresh[:4] == ids[5:9]
        assert not set(fresh) & set(restored)
        for sid in fresh:
            again.get_mut(sid)[:] = b"\xee" * 64
        for sid in restored:
            assert bytes(again.get(sid)) == pattern(sid, 64, salt=3)
    finally:
        reopened.close()


# -- into_pager ---------------------------------------------------------------------------


def test_into_pager(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 256)
    a = sub.alloc()
    assert sub.into_pager() is pager
    assert repr(sub) == f"<SubPageAllocator sub_size=256 page_size={PS} released>"
    assert sub.sub_size == 256
    uses: list[Callable[[], object]] = [
        lambda: sub.alloc(),
        lambda: sub.alloc_bulk(1),
        lambda: sub.alloc_bulk(0),
        lambda: sub.free(a),
        lambda: sub.free_bulk([a]),
        lambda: sub.free_bulk([]),
        lambda: sub.get(a),
        lambda: sub.get_mut(a),
        lambda: a.get(sub),
        lambda: a.get_mut(sub),
        lambda: sub.pager,
        lambda: sub.into_pager(),
    ]
    for use in uses:
        with pytest.raises(mp.Unavailable):
            use()
    # the parent stays allocated: what to do with it is the caller's business now
    assert allocated(pager) == [a.parent]
    pager.free(a.parent)
    assert allocated(pager) == []


# -- handles ------------------------------------------------------------------------------


def test_handle_fields_and_validation(core: str) -> None:
    parent = mp.PageId(5, PS)
    sid = SubPageId(parent, 3, 64)
    assert sid.parent == parent
    assert type(sid.parent) is mp.PageId
    assert sid.slot == 3
    assert sid.sub_size == 64
    assert isinstance(sid, tuple)
    with pytest.raises(AttributeError):
        sid.slot = 4
    with pytest.raises(AttributeError):
        sid.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        SubPageId(5, 0, 64)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SubPageId(mp.ProtectedPageId(5, PS), 0, 64)
    with pytest.raises(TypeError):
        SubPageId(parent, True, 64)
    with pytest.raises(TypeError):
        SubPageId(parent, 1.0, 64)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SubPageId(parent, -1, 64)
    for bad in (0, 3, -64, 64.0, True):
        with pytest.raises(mp.InvalidPageSize):
            SubPageId(parent, 0, bad)  # type: ignore[arg-type]
    assert SubPageId(parent, 0, 1).sub_size == 1


def test_handle_equality_hash_order(core: str) -> None:
    p5, p6 = mp.PageId(5, PS), mp.PageId(6, PS)
    a = SubPageId(p5, 1, 64)
    assert a == SubPageId(mp.PageId(5, PS), 1, 64)
    assert hash(a) == hash(SubPageId(p5, 1, 64))
    assert a != SubPageId(p5, 2, 64)
    assert a != SubPageId(p6, 1, 64)
    assert a != SubPageId(p5, 1, 128)  # other sub sizes never compare equal
    assert a != SubPageId(mp.PageId(5, 2048), 1, 64)
    assert a != p5
    assert a != mp.ProtectedPageId(5, PS)
    assert len({a, SubPageId(p5, 1, 64), SubPageId(p5, 1, 128), p5}) == 3
    ordered = [SubPageId(p5, 0, 64), SubPageId(p5, 1, 64), SubPageId(p5, 15, 64)]
    ordered.append(SubPageId(p6, 0, 64))
    assert sorted(reversed(ordered)) == ordered
    assert SubPageId(p5, 15, 64) < SubPageId(p6, 0, 64)


def test_handle_repr_pickle_copy(core: str) -> None:
    sid = SubPageId(mp.PageId(7, PS), 2, 128)
    assert repr(sid) == "SubPageId(PageId(7, page_size=1024), slot=2, sub_size=128)"
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(sid, protocol))
        assert back == sid
        assert type(back) is SubPageId
        assert type(back.parent) is mp.PageId
        assert back.slot == 2
    assert copy.copy(sid) is sid
    assert copy.deepcopy(sid) is sid


def test_handles_from_the_allocator_equal_constructed_ones(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 64)
    sid = sub.alloc()
    same = SubPageId(mp.PageId(sid.parent.index, PS), sid.slot, 64)
    assert sid == same
    assert hash(sid) == hash(same)
    assert type(sid) is SubPageId
    sub.get_mut(same)[:4] = b"abcd"
    assert bytes(sub.get(sid)[:4]) == b"abcd"


# -- randomized ---------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "sub_size"), [(1, 16), (2, 128), (3, 512), (4, 64)])
def test_randomized_against_a_model(pager: mp.Pager, seed: int, sub_size: int) -> None:
    rng = random.Random(seed)
    sub = SubPageAllocator(pager, sub_size)
    model: dict[SubPageId, bytes] = {}
    freed: list[SubPageId] = []

    def fill(sid: SubPageId) -> None:
        assert sid not in model
        data = rng.randbytes(sub_size)
        sub.get_mut(sid)[:] = data
        model[sid] = data

    for _ in range(3000):
        op = rng.random()
        if op < 0.35:
            fill(sub.alloc())
        elif op < 0.5:
            ids = sub.alloc_bulk(rng.randrange(0, 3 * sub.slots_per_page))
            assert len(set(ids)) == len(ids)
            for sid in ids:
                fill(sid)
        elif op < 0.75 and model:
            sid = rng.choice(list(model))
            sub.free(sid)
            del model[sid]
            freed.append(sid)
        elif op < 0.85 and model:
            ids = rng.sample(list(model), rng.randrange(1, min(len(model), 12) + 1))
            sub.free_bulk(ids)
            for sid in ids:
                del model[sid]
            freed.extend(ids)
        elif op < 0.92 and model and freed:
            # one stale or repeated id in a bulk free: nothing at all is freed
            ids = rng.sample(list(model), min(len(model), 5))
            bad = rng.choice(freed) if rng.random() < 0.5 else ids[0]
            if bad in model and bad not in ids:
                continue
            with pytest.raises((mp.DoubleFree, mp.OutOfBounds)):
                sub.free_bulk([*ids, bad])
            for sid in ids:
                assert bytes(sub.get(sid)) == model[sid]
        elif model:
            sid = rng.choice(list(model))
            assert bytes(sub.get(sid)) == model[sid]

    for sid, data in model.items():
        assert bytes(sid.get(sub)) == data
    assert sorted(allocated(pager)) == sorted({sid.parent for sid in model})
    assert f"parents={len({s.parent for s in model})} used={len(model)}>" in repr(sub)

    again = SubPageAllocator.restore(pager, sub_size, model)
    assert repr(again) == repr(sub)
    again.into_pager()  # while it held the parents too, the pager would not free them
    sub.free_bulk(list(model))
    assert allocated(pager) == []


# -- inside pager.batch() -----------------------------------------------------------------


class _Rollback(Exception):
    pass


def test_a_rolled_back_batch_takes_the_allocator_back(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 128)
    live = sub.alloc_bulk(20)  # three parents, the last one part full
    for sid in live:
        sid.get_mut(sub)[:] = pattern(sid, 128)
    state = repr(sub)
    with pytest.raises(_Rollback), pager.batch():
        sub.free_bulk(live[:8])  # a whole parent: back to the pager, which holds it
        sub.free(live[10])
        for sid in sub.alloc_bulk(30):
            sid.get_mut(sub)[:] = b"\xee" * 128
        sub.free(sub.alloc())
        raise _Rollback
    assert repr(sub) == state
    assert sorted(allocated(pager)) == sorted({sid.parent for sid in live})
    for sid in live:
        assert bytes(sid.get(sub)) == pattern(sid, 128)
    again = SubPageAllocator.restore(pager, 128, live)
    assert repr(again) == repr(sub)
    again.into_pager()
    fresh = sub.alloc()  # the lowest free slot of the part-full parent, as before the batch
    assert fresh.parent == live[-1].parent and fresh.slot == live[-1].slot + 1
    sub.free_bulk([*live, fresh])
    assert allocated(pager) == []


def test_slots_freed_in_a_batch_are_held_until_it_commits(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 256)
    a, b = sub.alloc(), sub.alloc()
    with pager.batch():
        sub.free(a)
        with pytest.raises(mp.OutOfBounds):
            sub.get(a)
        with pytest.raises(mp.DoubleFree):
            sub.free(a)
        with pytest.raises(mp.DoubleFree):
            sub.free_bulk([b, a])
        taken = sub.alloc_bulk(3)
        assert a not in taken and sub.alloc() not in (a, b)
        assert "used=5>" in repr(sub)
    assert sub.alloc() == a  # the batch committed: the slot is free again


def test_slots_allocated_and_freed_in_a_batch_are_reused(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 64)
    keep = sub.alloc()
    count = pager.page_count
    with pager.batch():
        first = sub.alloc()
        sub.free(first)
        for _ in range(500):
            sid = sub.alloc()
            assert sid == first
            sub.free_bulk([sid])
    assert pager.page_count == count and allocated(pager) == [keep.parent]


@pytest.mark.parametrize("seed", [5, 6])
def test_randomized_batches_against_a_model(pager: mp.Pager, seed: int) -> None:
    rng = random.Random(seed)
    sub = SubPageAllocator(pager, 128)
    model: dict[SubPageId, bytes] = {}

    def step(work: dict[SubPageId, bytes]) -> None:
        op = rng.random()
        if op < 0.4 or not work:
            for sid in sub.alloc_bulk(rng.randrange(1, 12)) if op < 0.2 else [sub.alloc()]:
                assert sid not in work
                work[sid] = rng.randbytes(128)
                sub.get_mut(sid)[:] = work[sid]
        elif op < 0.7:
            sid = rng.choice(list(work))
            sub.free(sid)
            del work[sid]
        else:
            ids = rng.sample(list(work), rng.randrange(1, min(len(work), 10) + 1))
            sub.free_bulk(ids)
            for sid in ids:
                del work[sid]

    for _ in range(60):
        work = dict(model)
        if rng.random() < 0.5:
            with pager.batch():
                for _ in range(rng.randrange(1, 40)):
                    step(work)
            model = work
        else:
            with pytest.raises(_Rollback), pager.batch():
                for _ in range(rng.randrange(1, 40)):
                    step(work)
                raise _Rollback
        for sid, data in model.items():
            assert bytes(sub.get(sid)) == data
        assert sorted(allocated(pager)) == sorted({sid.parent for sid in model})
        assert f"used={len(model)}>" in repr(sub)
        for _ in range(rng.randrange(0, 5)):  # and outside a batch
            step(model)


def test_the_pager_will_not_free_a_parent_that_has_sub_pages(pager: mp.Pager) -> None:
    sub = SubPageAllocator(pager, 256)
    a = sub.alloc()
    other = pager.alloc()
    with pytest.raises(mp.PageInUse):
        pager.free(a.parent)
    with pytest.raises(mp.PageInUse):
        pager.free_bulk([other, a.parent])  # nothing freed
    assert pager.is_allocated(other) and bytes(sub.get(a)) == bytes(256)
    assert pager.alloc() != a.parent
    sub.free(a)  # the last sub-page: the parent goes back, through the allocator
    assert not pager.is_allocated(a.parent)
    b = sub.alloc()
    sub.into_pager()  # given back: the pager no longer asks it
    pager.free(b.parent)
    keep = SubPageAllocator(pager, 256)
    c = keep.alloc()
    with pytest.raises(mp.PageInUse):
        pager.free(c.parent)
    del keep  # an allocator that is gone holds nothing: its parents are plain pages again
    pager.free(c.parent)
