"""Both cores read and write the same format, byte for byte."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import mappedpages as mp
from helpers import check_ok
from mappedpages import _backend


def _workload(path: str, seed: int) -> list[mp.PageId]:
    """A deterministic mix of every mutating call, crossing bitmap groups."""
    rng = random.Random(seed)
    with mp.Pager.create(path, 1024, sync=False) as p:
        live: list[mp.PageId] = []
        live += p.alloc_bulk(9000)
        for step in range(400):
            op = rng.random()
            if op < 0.4 or not live:
                live.append(p.alloc())
            elif op < 0.7:
                p.free(live.pop(rng.randrange(len(live))))
            elif op < 0.8:
                live += p.alloc_bulk(rng.randint(1, 50))
            elif op < 0.9:
                victims = rng.sample(live, min(len(live), rng.randint(1, 30)))
                p.free_bulk(victims)
                live = [x for x in live if x not in set(victims)]
            else:
                with p.batch():
                    live.append(p.alloc())
                    p.free(live.pop(0))
            if step % 50 == 0:
                p.get_page_mut(live[-1])[:8] = step.to_bytes(8, "little")
    return sorted(live)


def test_identical_bytes(tmp_path: Path) -> None:
    images = {}
    for name in ("c", "python"):
        path = os.fspath(tmp_path / f"{name}.mp")
        with _backend.using(name):
            live = _workload(path, seed=7)
        with open(path, "rb") as f:
            images[name] = (f.read(), live)
    assert images["c"][1] == images["python"][1]
    assert images["c"][0] == images["python"][0]


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
