"""Hot backup: ``pager.backup(dest)``, ``ro.backup(dest)``, ``snap.backup(dest)`` and
``mappedpages backup``: a copy of one commit, taken while a writer goes on, that opens and
checks clean, equals the snapshot it came from, and leaves free pages as holes."""

from __future__ import annotations

import gzip
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import mappedpages as mp
from helpers import check_ok

DATA = Path(__file__).parent / "data"


def _state(r: mp.PageReader) -> tuple[object, ...]:
    """What a copy must equal: counts, the allocated pages, the protected contents."""
    pages = [int(x) for x in r.iter_allocated_pages()]
    protected = [
        (int(x), mp.crc32c(r.get_protected_page(x))) for x in r.iter_allocated_protected_pages()
    ]
    return r.generation, r.page_count, r.free_page_count, pages, protected


def _fill(p: mp.Pager, n: int) -> list[mp.PageId]:
    ids = p.alloc_bulk(n)
    for pid in ids:
        p.get_page_mut(pid)[:8] = int(pid).to_bytes(8, "little")
    return ids


@pytest.mark.parametrize("ps", [1024, 4096])
def test_a_backup_equals_the_commit_and_is_sparse(core: str, tmp_path: Path, ps: int) -> None:
    src, dest = str(tmp_path / "src.mp"), str(tmp_path / "copy.mp")
    with mp.Pager.create(src, ps, sync=False) as p:
        ids = _fill(p, 20000)
        prot = p.alloc_protected_bulk(30)
        for i, ppid in enumerate(prot):
            with ppid.get_mut(p) as w:
                w.page_mut()[:4] = i.to_bytes(4, "little")
        p.free_bulk(ids[1000:19000])  # most of the file is free now
        p.free_protected(prot[3])
        p.backup(dest)
        state = _state(p)
        with pytest.raises(FileExistsError):
            p.backup(dest)  # never over a file
    check_ok(dest)
    with mp.ReadOnlyPager.open(dest) as ro:
        assert _state(ro) == state
        kept = ids[:1000] + ids[19000:]
        assert all(bytes(ro.get_page(x)[:8]) == int(x).to_bytes(8, "little") for x in kept)
    # free pages are holes: the copy takes a fraction of the source's disk space
    assert os.stat(dest).st_blocks * 4 < os.stat(src).st_blocks
    assert os.path.getsize(dest) == state[1] * ps
    with mp.Pager.open(dest) as q:  # and a writer carries on with it
        q.free(kept[0])
        q.alloc_bulk(10)
    check_ok(dest)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_a_backup_from_a_snapshot_and_from_a_reader(core: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src.mp")
    with mp.Pager.create(src, 1024, sync=False) as p:
        _fill(p, 500)
        with p.snapshot() as snap, mp.ReadOnlyPager.open(src) as ro:
            before = _state(snap)
            assert _state(ro) == before
            p.free_bulk(list(p.iter_allocated_pages())[:200])  # the writer moves on
            ppid = p.alloc_protected()
            with ppid.get_mut(p) as w:
                w.page_mut()[:2] = b"hi"
            snap.backup(tmp_path / "snap.mp")
            ro.backup(str(tmp_path / "ro.mp"))
        for name in ("snap.mp", "ro.mp"):
            check_ok(str(tmp_path / name))
            with mp.ReadOnlyPager.open(tmp_path / name) as copy:
                assert _state(copy) == before


def test_backups_from_a_thread_while_other_threads_commit(core: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src.mp")
    with mp.Pager.create(src, 1024, sync=False) as p:
        stop = threading.Event()

        def churn() -> None:
            live: list[mp.PageId] = []
            while not stop.is_set():
                live += p.alloc_bulk(50)
                p.free_bulk(live[:40])
                del live[:40]
                time.sleep(0.0005)  # a writer with work of its own between commits

        worker = threading.Thread(target=churn)
        worker.start()
        try:
            for i in range(10):
                p.backup(tmp_path / f"b{i}.mp")
        finally:
            stop.set()
            worker.join()
    for i in range(10):
        check_ok(str(tmp_path / f"b{i}.mp"))


_WRITER = textwrap.dedent(
    """
    import os, random, sys, time
    import mappedpages as mp
    path, stop, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    rng = random.Random(4)
    with mp.Pager.open(path, sync=False) as p:
        live = list(p.iter_allocated_pages())
        prot = list(p.iter_allocated_protected_pages())
        print("ready", flush=True)
        end = time.monotonic() + seconds  # at the latest: the test says when
        while time.monotonic() < end and not os.path.exists(stop):
            op = rng.random()
            if op < 0.3 and len(live) < 6000:
                live += p.alloc_bulk(rng.randint(1, 400))
            elif op < 0.55 and live:
                n = min(len(live), rng.randint(1, 300))
                p.free_bulk(live[-n:])
                del live[-n:]
            elif op < 0.8 and prot:
                with rng.choice(prot).get_mut(p) as w:
                    w.page_mut()[:8] = rng.randbytes(8)
            elif op < 0.9:
                prot += p.alloc_protected_bulk(rng.randint(1, 3))
            else:
                with p.batch():
                    live.append(p.alloc())
                    if prot:
                        p.free_protected(prot.pop(0))
    """
)


@pytest.mark.slow
def test_twenty_backups_while_a_writer_commits_without_pause(core: str, tmp_path: Path) -> None:
    """Each copy is taken through a ReadOnlyPager while another process commits without pause
    (from before the first copy until after the last, however long the copies take on a busy
    machine); each opens, checks clean and equals the snapshot it was taken from."""
    src, stop = str(tmp_path / "src.mp"), tmp_path / "stop"
    with mp.Pager.create(src, 1024, sync=False) as p:
        _fill(p, 3000)
        p.alloc_protected_bulk(20)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, src, str(stop), "120"],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, MAPPEDPAGES_CORE=core),
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    copies: list[tuple[str, tuple[object, ...]]] = []
    try:
        start = time.monotonic()
        for i in range(20):
            dest = str(tmp_path / f"copy{i}.mp")
            with mp.ReadOnlyPager.open(src) as ro:
                ro.backup(dest)
                copies.append((dest, _state(ro)))
            time.sleep(max(0.0, start + (i + 1) * 0.25 - time.monotonic()))
        assert writer.poll() is None, "the writer stopped before the last copy"
    finally:
        stop.touch()
        assert writer.wait(timeout=60) == 0
    generations = [state[0] for _, state in copies]
    assert len(set(generations)) > 15  # taken across the writer's run, not of one commit
    for dest, state in copies:
        check_ok(dest)
        with mp.ReadOnlyPager.open(dest) as copy:
            assert _state(copy) == state


_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    import mappedpages as mp

    def progress(done, total):
        if done * 2 >= total:  # half-way: killed, as by the OOM killer or a kill -9
            os.kill(os.getpid(), signal.SIGKILL)

    with mp.ReadOnlyPager.open(sys.argv[1]) as ro:
        ro._backup(sys.argv[2], progress)
    """
)


def test_a_backup_killed_half_way_leaves_no_file(core: str, tmp_path: Path) -> None:
    src, dest = str(tmp_path / "src.mp"), str(tmp_path / "copy.mp")
    with mp.Pager.create(src, 4096, sync=False) as p:
        p.alloc_bulk(8192)  # 32 MiB in use: four chunks of the copy
    run = subprocess.run(
        [sys.executable, "-c", _KILLED, src, dest], env=dict(os.environ, MAPPEDPAGES_CORE=core)
    )
    assert run.returncode == -signal.SIGKILL
    assert not os.path.exists(dest)


def test_a_failed_backup_leaves_nothing(core: str, tmp_path: Path) -> None:
    src = str(tmp_path / "src.mp")
    with mp.Pager.create(src, 1024, sync=False) as p:
        _fill(p, 100)
        with pytest.raises(FileNotFoundError):
            p.backup(tmp_path / "missing" / "copy.mp")
        with pytest.raises(mp.Unavailable):
            with p.snapshot() as snap:
                pass
            snap.backup(tmp_path / "late.mp")
    assert sorted(os.listdir(tmp_path)) == ["src.mp", "src.mp-readers"] or sorted(
        os.listdir(tmp_path)
    ) == ["src.mp"]


def test_a_format_1_file_is_copied_as_it_is(core: str, tmp_path: Path) -> None:
    src, dest = str(tmp_path / "v1.mp"), str(tmp_path / "copy.mp")
    with gzip.open(DATA / "v1-4k.mp.gz", "rb") as f, open(src, "wb") as out:
        shutil.copyfileobj(f, out)
    with mp.ReadOnlyPager.open(src) as ro:
        ro.backup(dest)
        state = _state(ro)
    check_ok(dest)
    with mp.ReadOnlyPager.open(dest) as copy:
        assert _state(copy) == state


@pytest.mark.parametrize("name", ["v1-1k.mp.gz", "v1-4k.mp.gz"])
def test_an_upgraded_format_1_file_is_copied(core: str, tmp_path: Path, name: str) -> None:
    """An upgraded file keeps its records where the upgrade put them (pages a pointer in
    page 0 names, not pages 1 and 2)."""
    src, dest = str(tmp_path / "v1.mp"), str(tmp_path / "copy.mp")
    with gzip.open(DATA / name, "rb") as f, open(src, "wb") as out:
        shutil.copyfileobj(f, out)
    with mp.Pager.open(src) as p:  # upgrades it in one commit
        p.alloc_bulk(5)
        p.backup(dest)
        state = _state(p)
    check_ok(dest)
    with mp.ReadOnlyPager.open(dest) as copy:
        assert _state(copy) == state


def test_the_cli_backs_up_a_file_a_writer_holds(core: str, tmp_path: Path) -> None:
    src, dest = str(tmp_path / "src.mp"), str(tmp_path / "copy.mp")
    with mp.Pager.create(src, 1024, sync=False) as p:
        _fill(p, 300)
        out = subprocess.run(
            [sys.executable, "-m", "mappedpages", "backup", src, dest],
            capture_output=True,
            text=True,
            env=dict(os.environ, MAPPEDPAGES_CORE=core),
        )
        assert out.returncode == 0, out.stderr
        assert f"generation {p.generation}" in out.stdout
        again = subprocess.run(
            [sys.executable, "-m", "mappedpages", "backup", src, dest],
            capture_output=True,
            text=True,
        )
        assert again.returncode == 2 and "exists" in again.stderr
        state = _state(p)
    check_ok(dest)
    with mp.ReadOnlyPager.open(dest) as copy:
        assert _state(copy)[1:] == state[1:]


def test_the_cli_shows_progress_on_a_terminal_for_a_large_copy(tmp_path: Path) -> None:
    import pty

    src, dest = str(tmp_path / "src.mp"), str(tmp_path / "copy.mp")
    with mp.Pager.create(src, 4096, sync=False) as p:
        p.alloc_bulk(20_000)  # 80 MiB in use: above the 64 MiB from which progress shows
    leader, follower = pty.openpty()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "mappedpages", "backup", src, dest],
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
        )
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert run.returncode == 0
    shown_percents = [int(x) for x in re.findall(rb"backing up: (\d+)%", shown)]
    assert shown_percents == sorted(shown_percents) and len(shown_percents) > 5
    assert shown_percents[-1] == 100 and shown.endswith(b"\r")  # the line is cleared after
    check_ok(dest)


def test_runs_in_use_are_those_a_page_by_page_walk_finds() -> None:
    """The backup finds the pages to copy by runs (re over each chunk of kinds); on random
    kinds, chunk sizes and pages to leave out, the runs are exactly those of a walk over every
    page."""
    from mappedpages import backup

    class Kinds:
        def __init__(self, kinds: list[int]) -> None:
            self.raw = bytes(kinds)
            self.page_count = len(kinds)

        def kinds(self, start: int, n: int) -> bytes:
            return self.raw[start : start + n]

    def walk(kinds: bytes, skip: frozenset[int]) -> list[tuple[int, int]]:
        runs, start = [], -1
        for page, kind in enumerate([*kinds, 0]):
            used = kind != 0 and page not in skip
            if used and start < 0:
                start = page
            elif not used and start >= 0:
                runs.append((start, page - start))
                start = -1
        return runs

    rng = random.Random(15)
    for _ in range(3000):
        n = rng.randint(0, 60)
        core = Kinds([rng.choice([0, 0, 1, 1, 1, 2, 3]) for _ in range(n)])
        skip = frozenset(rng.sample(range(n + 1), min(n + 1, rng.randint(0, 3))))
        with pytest.MonkeyPatch.context() as mp_:
            mp_.setattr(backup, "_KINDS_CHUNK", rng.randint(1, 9))
            assert backup._used_runs(core, skip) == walk(core.raw, skip), (core.raw, skip)
