"""SIGKILL at random instants: the file always opens to the last acknowledged state, or to that
state plus the call that was in flight.

A forked child runs a random mixed workload (every mutating call, protected writes, batches)
and acknowledges each finished call through a pipe; the parent kills it after a random delay.
The workload is a function of a seed and of the file's state, so the parent can replay it on a
copy of the file the child started from and compute the two states the killed file may show.
The next round continues on the killed file. ``MAPPEDPAGES_SIGKILLS`` sets the number of kills
per core (default 120; the documented long run uses 1000).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import time

import pytest

import mappedpages as mp
from helpers import State, check_ok, count, pager_state

# slow: a proof, run in full by the first run of .ci/run (the installed wheel's run
# leaves the slow tests out)
pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("MAPPEDPAGES_SIGKILLS", "120"))


def _step(p: mp.Pager, rng: random.Random) -> None:
    """One call, chosen by ``rng`` and the pager's state (so a replay makes the same one)."""
    regular = list(p.iter_allocated_pages())
    protected = list(p.iter_allocated_protected_pages())
    kind = rng.choice(
        [
            "alloc",
            "free",
            "bulk",
            "free_bulk",
            "palloc",
            "pwrite",
            "pwrite",
            "pfree",
            "pbulk",
            "pfree_bulk",
            "batch",
        ]
    )
    if kind == "alloc" or (kind in ("free", "free_bulk") and not regular):
        p.alloc()
    elif kind == "free":
        p.free(rng.choice(regular))
    elif kind == "bulk":
        p.alloc_bulk(rng.randint(1, 40))
    elif kind == "free_bulk":
        p.free_bulk(rng.sample(regular, min(len(regular), rng.randint(1, 40))))
    elif kind == "palloc" or not protected:
        p.alloc_protected()
    elif kind == "pwrite":
        with rng.choice(protected).get_mut(p) as w:
            w.page_mut()[rng.randrange(1000) :][:24] = rng.randbytes(24)
    elif kind == "pfree":
        p.free_protected(rng.choice(protected))
    elif kind == "pbulk":
        p.alloc_protected_bulk(rng.randint(1, 30))
    elif kind == "pfree_bulk":
        p.free_protected_bulk(rng.sample(protected, min(len(protected), rng.randint(1, 30))))
    else:
        with p.batch():
            p.alloc_bulk(3)
            with rng.choice(protected).get_mut(p) as w:
                w.page_mut()[:8] = rng.randbytes(8)
            if regular:
                p.free(regular[0])
            p.alloc_protected()


def _child(path: str, seed: int, ack: int) -> None:
    rng = random.Random(seed)
    with mp.Pager.open(path, sync=False) as p:
        for i in range(1_000_000):
            _step(p, rng)
            os.write(ack, struct.pack("<I", i))


def _replay(base: str, scratch: str, seed: int, done: int) -> tuple[State, State]:
    """The states after ``done`` calls and after one more, replayed on a copy of ``base``."""
    shutil.copyfile(base, scratch)
    rng = random.Random(seed)
    with mp.Pager.open(scratch, sync=False) as p:
        for _ in range(done):
            _step(p, rng)
        acked = pager_state(p)
        _step(p, rng)
        return acked, pager_state(p)


def _read_acks(fd: int) -> int:
    """Number of calls the child finished (acknowledgements are 4 bytes each)."""
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return len(data) // 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_sigkill_at_random_instants(core: str, tmp_path: object) -> None:
    tmp = str(tmp_path)
    path, base, scratch = (os.path.join(tmp, n) for n in ("live.mp", "base.mp", "replay.mp"))
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(50)
        p.alloc_protected_bulk(10)
    rng = random.Random(2024)
    in_flight = 0
    for round_ in range(KILLS):
        shutil.copyfile(path, base)
        seed = rng.randrange(1 << 30)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: work until killed
            os.close(read_fd)
            try:
                _child(path, seed, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        time.sleep(rng.uniform(0.001, 0.03))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        done = _read_acks(read_fd)
        os.close(read_fd)
        acked, next_state = _replay(base, scratch, seed, done)
        check_ok(path)
        with mp.Pager.open(path, sync=False) as p:
            got = pager_state(p)
        assert got in (acked, next_state), f"round {round_}: neither acknowledged nor in flight"
        in_flight += got == next_state != acked
        count("SIGKILLs, file checked afterwards")
    print(f"SIGKILLs: {KILLS} on the {core} core, {in_flight} caught a call in flight")
