"""Both cores read and write the same format, byte for byte."""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any

import pytest

import mappedpages as mp
from helpers import check_ok
from mappedpages import _backend


def _workload(path: str, seed: int, page_size: int = 1024) -> list[mp.PageId]:
    """A deterministic mix of every mutating call: regular and protected, single and bulk,
    batches committed and rolled back, shrinks, reopened now and then; across bitmap leaves,
    with checkpoints and growth."""
    rng = random.Random(seed)
    p = mp.Pager.create(path, page_size, sync=False)
    live: list[mp.PageId] = p.alloc_bulk(3000 if page_size == 1024 else 300)
    prot: list[mp.ProtectedPageId] = []
    for step in range(400):
        op = rng.random()
        if op < 0.25 or not live:
            live.append(p.alloc())
        elif op < 0.4:
            p.free(live.pop(rng.randrange(len(live))))
        elif op < 0.45:
            live += p.alloc_bulk(rng.randint(1, 50))
        elif op < 0.5:
            victims = rng.sample(live, min(len(live), rng.randint(1, 30)))
            p.free_bulk(victims)
            live = [x for x in live if x not in set(victims)]
        elif op < 0.6:
            prot += p.alloc_protected_bulk(rng.randint(1, 3))
        elif op < 0.75 and prot:
            with rng.choice(prot).get_mut(p) as w:
                w.page_mut()[rng.randrange(page_size - 8) :][:8] = rng.randbytes(8)
        elif op < 0.8 and prot:
            p.free_protected(prot.pop(rng.randrange(len(prot))))
        else:
            keep = rng.random() < 0.7
            with contextlib.suppress(KeyError), p.batch():
                new = p.alloc()
                old = live.pop(0)
                p.free(old)
                if prot:
                    with prot[0].get_mut(p) as w:
                        w.page_mut()[:4] = step.to_bytes(4, "little")
                if not keep:
                    live.insert(0, old)
                    raise KeyError("rolled back")
                live.append(new)
        if step % 50 == 0:
            p.get_page_mut(live[-1])[:8] = step.to_bytes(8, "little")
        if step % 61 == 60:  # free pages at the end go back: moves, then cuts
            p.shrink()
        if step % 97 == 96:
            p.close()
            p = mp.Pager.open(path, sync=False)
    p.close()
    return sorted(live)


def _on_both_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Any) -> Any:
    """``run(path)`` on each core: the files are byte-identical, and so are the results
    (returned)."""
    from mappedpages import _files

    monkeypatch.setattr(_files, "new_file_id", lambda: b"F" * 16)  # the one random field
    images = {}
    for name in ("c", "python"):
        path = os.fspath(tmp_path / f"{name}.mp")
        with _backend.using(name):
            result = run(path)
        with open(path, "rb") as f:
            images[name] = (f.read(), result)
    assert images["c"][1] == images["python"][1]
    assert images["c"][0] == images["python"][0]
    check_ok(os.fspath(tmp_path / "c.mp"))
    return images["c"][1]


@pytest.mark.parametrize("page_size", [1024, 2048, 4096, 65536])
def test_identical_bytes(tmp_path: Path, page_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _on_both_cores(tmp_path, monkeypatch, lambda path: _workload(path, 7, page_size))


def _sealed_workload(path: str, seed: int, page_size: int) -> tuple[list[mp.PageId], int]:
    """Copy-on-write steps whose pages are sealed (write_page, flushed in the batch), mixed
    with pages written through views, batches rolled back, and sealed pages written again
    (write_page and views, inside batches and out, before and after a reopen), durably."""
    rng = random.Random(seed)
    p = mp.Pager.create(path, page_size)
    root = p.alloc_protected()
    nodes = p.alloc_bulk(8)
    vouched = 0  # batches whose record vouched for data pages
    for step in range(60):
        op = rng.random()
        with contextlib.suppress(KeyError), p.batch():
            new = p.alloc_bulk(rng.randint(1, 12))
            for i, pid in enumerate(new):
                if op < 0.2 and i == 0:
                    p.get_page_mut(pid)[:8] = step.to_bytes(8, "little")  # viewed: flushed
                else:
                    p.write_page(pid, rng.randbytes(64), rng.randrange(page_size - 64))
            p.flush(new)
            if op < 0.3:
                p.get_page_mut(new[-1])[:4] = b"late"  # viewed after its seal: flushed
            with root.get_mut(p) as w:
                w.page_mut()[:8] = int(new[0]).to_bytes(8, "little")
            if op > 0.9:
                raise KeyError("rolled back")
            p.free_bulk(nodes)
            nodes = new
        vouched += bool(p._core.sealed_runs())
        if 0.5 < op < 0.6:
            p.write_page(nodes[0], b"in place")  # retires the record vouching for it
        elif 0.6 < op < 0.7:
            p.get_page_mut(nodes[-1])[:8] = b"in place"
        elif 0.7 < op < 0.8:
            with p.batch():
                p.write_page(nodes[0], b"again")
                p.flush(nodes[:1])
        if step % 23 == 22:
            p.close()
            p = mp.Pager.open(path)
    p.close()
    return nodes, vouched


@pytest.mark.parametrize("page_size", [1024, 4096, 65536])
def test_identical_bytes_with_sealed_pages(
    tmp_path: Path, page_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = lambda path: _sealed_workload(path, 5, page_size)  # noqa: E731
    _nodes, vouched = _on_both_cores(tmp_path, monkeypatch, run)
    assert vouched > 20, vouched  # a record vouched for data pages after most batches


@pytest.mark.parametrize(("writer", "reader"), [("c", "python"), ("python", "c")])
def test_written_by_one_opened_by_other(tmp_path: Path, writer: str, reader: str) -> None:
    path = os.fspath(tmp_path / "x.mp")
    with _backend.using(writer):
        live = _workload(path, seed=11)
    check_ok(path)
    with _backend.using(reader):
        with mp.Pager.open(path, sync=False) as p:
            assert list(p.iter_allocated_pages()) == live
            extra = p.alloc_bulk(10)
            p.free(live[0])
        expected = sorted(live[1:] + extra)
    with _backend.using(writer), mp.Pager.open(path) as p:
        assert list(p.iter_allocated_pages()) == expected
    check_ok(path)


def test_crc32c_agrees() -> None:
    from mappedpages import _core_c, _core_py

    rng = random.Random(3)
    for size in (0, 1, 7, 8, 9, 63, 64, 65, 1000, 4096, 5000, 70_000):
        data = bytes(rng.getrandbits(8) for _ in range(size))
        seed = rng.getrandbits(32)
        assert _core_c.crc32c(data, seed) == _core_py.crc32c(data, seed)
    assert _core_c.crc32c(b"123456789") == _core_py.crc32c(b"123456789") == 0xE3069283
