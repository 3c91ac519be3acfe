"""The measurements of ``mappedpages bench`` measure what they say (not how fast it is)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mappedpages as mp
from helpers import check_ok
from mappedpages import bench, bench_snapshots


def test_readers_of_the_commit_benchmark_are_registered_and_refresh(
    core: str, tmp_path: Path
) -> None:
    r = bench_snapshots.commit_under_readers(
        os.fspath(tmp_path), core, n_readers=3, phases=2, per_phase=5
    )
    assert r.readers_seen == 3  # the writer's reader table listed all three
    assert r.refreshes > 0  # and they refreshed while it committed
    assert r.without > 0 and r.with_readers > 0
    assert list(tmp_path.iterdir()) == []  # its file and reader table removed


def test_refresh_and_alloc_protected_measures_run_on_a_large_file(
    core: str, tmp_path: Path
) -> None:
    big = os.fspath(tmp_path / "big.mp")
    # a smaller "large" file than the bench's, with the same shape: protected pages and more
    with mp.Pager.create(big, 1024, sync=False, preallocate=False) as p:
        p.alloc_protected_bulk(3000)
        p.alloc_bulk(20000)
    costs = bench_snapshots.refresh_costs(os.fspath(tmp_path), big, rounds=8)
    assert costs.nothing_new > 0 and costs.after_commit_big > 0
    full = bench_snapshots.alloc_protected_full_vs_fresh(os.fspath(tmp_path), big, rounds=10)
    assert full.fresh > 0 and full.full > 0
    with mp.Pager.open(big) as p:  # what the measures allocated they freed again
        assert sum(1 for _ in p.iter_allocated_protected_pages()) == 3000
    check_ok(big)


def test_peers_include_sqlite(tmp_path: Path) -> None:
    names = [name for name, _, _ in bench._peers(os.fspath(tmp_path))]
    assert "SQLite durable put, 4 KiB value" in names


def test_opening_a_large_file_reads_its_trees_not_the_file(core: str, tmp_path: Path) -> None:
    """The open walks its trees without read-around (which read most of a large file), and
    gives the mapping its read-ahead back for the pages users read."""
    import mmap

    path = os.fspath(tmp_path / "big.mp")
    with mp.Pager.create(path, 1024, sync=False, preallocate=False) as p:
        p.alloc_bulk(1 << 20)
    bench.evict(path)
    if bench.file_cached(path) > 1 << 20:
        pytest.skip("this file system keeps the file in memory")
    with mp.Pager.open(path, sync=False) as p:
        cached = bench.file_cached(path)
        bitmap = p.page_count // 8
        assert 0 < cached <= 8 * bitmap  # 3.2x; 32x with an 8 MiB read-around
        far = mp.PageId(p.page_count - 100_000, 1024)
        bench.evict(path)
        bytes(p.get_page(far)[:1])
        through_pager = bench.file_cached(path)
    bench.evict(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        m[int(far) * 1024]
        plain = bench.file_cached(path)
    assert through_pager >= plain // 2  # the read-ahead any mapping of the file gets


def test_file_cached_counts_the_pages_read(tmp_path: Path) -> None:
    path = os.fspath(tmp_path / "f")
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 20))
    bench.evict(path)
    if bench.file_cached(path) > 0:
        pytest.skip("this file system keeps the file in memory")
    with open(path, "rb") as f:
        f.read()
    assert bench.file_cached(path) == 1 << 20


def test_the_copy_on_write_step_does_the_same_work_everywhere(core: str, tmp_path: Path) -> None:
    """The benchmark's contenders each leave 16 nodes and a root naming the newest ones."""
    import sqlite3

    from mappedpages import bench_cow

    with bench_cow.mappedpages_step(str(tmp_path)) as step:
        for _ in range(3):
            step()
    with mp.Pager.open(str(tmp_path / "cow.mp")) as p:
        nodes = list(p.iter_allocated_pages())
        (root,) = list(p.iter_allocated_protected_pages())
        assert len(nodes) == 16 and all(bytes(p.get_page(x)[:4]) == b"\0\1\2\3" for x in nodes)
        assert int.from_bytes(p.get_protected_page(root)[:8], "little") == int(nodes[0])
    check_ok(str(tmp_path / "cow.mp"))
    with bench_cow.sqlite_step(str(tmp_path)) as step:
        for _ in range(3):
            step()
    db = sqlite3.connect(str(tmp_path / "cow.db"))
    assert db.execute("SELECT count(*), min(k) FROM node").fetchone() == (16, 32)
    assert db.execute("SELECT v FROM root").fetchone() == (32,)
    db.close()
