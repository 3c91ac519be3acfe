"""The measurements of ``mappedpages bench`` measure what they say (not how fast it is)."""

from __future__ import annotations

import os
from pathlib import Path

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
