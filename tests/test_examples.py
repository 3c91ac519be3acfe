"""examples/kvstore.py on both cores: bulk use, edge cases, and SIGKILLs at random instants."""

from __future__ import annotations

import os
import random
import signal
import struct
import sys
import time
from pathlib import Path

import pytest

import mappedpages as mp

sys.path.insert(0, os.fspath(Path(__file__).resolve().parent.parent / "examples"))

from kvstore import KVStore  # the examples directory is not a package

# slow: runs the examples, run in full by the first run of .ci/run (the installed wheel's run
# leaves the slow tests out)
pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("KVSTORE_SIGKILLS", "20"))
READY = struct.pack("<I", 0xFFFFFFFF)  # the child has opened the store


def _key(rng: random.Random, n: int) -> bytes:
    """A unique 8-16 byte key: the number in hex, padded with random bytes."""
    head = b"%x:" % n
    return head + rng.randbytes(rng.randint(max(0, 8 - len(head)), 16 - len(head)))


def _value(rng: random.Random) -> bytes:
    """Mostly sub-page sized (including empty and exactly 256 bytes), one in ten a full page."""
    roll = rng.random()
    if roll < 0.02:
        return b"" if roll < 0.01 else rng.randbytes(256)
    if roll < 0.9:
        return rng.randbytes(rng.randint(1, 255))
    return rng.randbytes(rng.randint(257, 4096 - 64))


def _allocated_pages(path: str) -> int:
    with mp.ReadOnlyPager.open(path) as ro:
        return sum(1 for _ in ro.iter_allocated_pages())


def test_bulk_insert_lookup_delete_reopen(core: str, path: str) -> None:
    rng = random.Random(20240601)
    data = {_key(rng, n): _value(rng) for n in range(100_000)}
    keys = list(data)
    singles = 2_000  # through put/delete, one commit each; the rest through batches
    with KVStore.open(path, sync=False) as store:
        for key in keys[:singles]:
            store.put(key, data[key])
        for i in range(singles, len(keys), 5_000):
            store.put_many((key, data[key]) for key in keys[i : i + 5_000])
        assert len(store) == len(data)
        for key, value in data.items():
            assert store.get(key) == value
        assert all(key in store for key in keys)

        gone = keys[::3]
        for key in gone[:singles]:
            assert store.delete(key)
        for i in range(singles, len(gone), 5_000):
            assert store.delete_many(gone[i : i + 5_000]) == len(gone[i : i + 5_000])
        assert not store.delete(gone[0])
        assert store.delete_many(gone[:10]) == 0
        for key in gone:
            del data[key]
        assert len(store) == len(data)

    with KVStore.open(path, sync=False) as store:
        assert len(store) == len(data)
        assert dict(store.items()) == data
        for key, value in data.items():
            assert store.get(key) == value
        for key in gone:
            assert store.get(key) is None
            assert key not in store


def test_semantics_and_limits(core: str, path: str, tmp_path: Path) -> None:
    with KVStore.open(path, sync=False) as store:
        assert store.get(b"missing") is None
        assert b"missing" not in store
        assert not store.delete(b"missing")
        assert len(store) == 0 and list(store.items()) == []

        store.put(b"k", b"small")
        store.put(b"k", b"x" * 3000)  # sub-page -> page
        assert store.get(b"k") == b"x" * 3000
        store.put(b"k", b"")  # page -> sub-page, empty value
        assert store.get(b"k") == b"" and b"k" in store
        store.put(b"k" * 255, b"y" * store.max_value)  # the limits themselves are fine
        assert len(store) == 2

        with pytest.raises(ValueError):
            store.put(b"k" * 256, b"v")
        with pytest.raises(ValueError):
            store.put(b"k", b"v" * (store.max_value + 1))
        with pytest.raises(ValueError):  # checked before anything in the batch is done
            store.put_many([(b"a", b"1"), (b"b" * 256, b"2")])
        with pytest.raises(TypeError):
            store.put("k", b"v")  # type: ignore[arg-type]
        assert store.get(b"k") == b"" and b"a" not in store and len(store) == 2

    # Pages a crash left allocated but unreferenced are reclaimed by the next open.
    before = _allocated_pages(path)
    with mp.Pager.open(path, sync=False) as pager:
        pager.alloc_bulk(3)
    assert _allocated_pages(path) == before + 3
    with KVStore.open(path, sync=False) as store:
        assert store.get(b"k") == b"" and store.get(b"k" * 255) == b"y" * store.max_value
    assert _allocated_pages(path) == before

    # Foreign files: not a mappedpages file; one without a root; one with a foreign root.
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a store" * 1000)
    with pytest.raises(ValueError):
        KVStore.open(junk)
    bare = os.fspath(tmp_path / "bare.mp")
    mp.Pager.create(bare, sync=False).close()
    with pytest.raises(ValueError):
        KVStore.open(bare)
    other = os.fspath(tmp_path / "other.mp")
    with mp.Pager.create(other, sync=False) as pager, pager.alloc_protected().get_mut(pager) as w:
        w.page_mut()[0:8] = b"SOMEFMT!"
    with pytest.raises(ValueError):
        KVStore.open(other)
    KVStore.open(path).close()  # and the store's own file is still fine


def test_bucket_full(core: str, path: str) -> None:
    with KVStore.open(path, 1024, sync=False, buckets=1) as store:
        n = 0
        with pytest.raises(ValueError, match="bucket full"):
            while True:
                store.put(b"key%06d" % n, b"v")
                n += 1
        assert len(store) == n
        with pytest.raises(ValueError, match="bucket full"):
            store.put_many([(b"another", b"v")])
        assert len(store) == n and b"another" not in store
    with KVStore.open(path, sync=False) as store:
        assert len(store) == n and store.get(b"key%06d" % (n - 1)) == b"v"


# -- SIGKILL ------------------------------------------------------------------------------


def _op(seed: int, i: int) -> tuple[bytes, bytes | None]:
    """Operation ``i`` of a deterministic sequence over 300 keys: a put, or (1/4) a delete."""
    rng = random.Random(seed * 1_000_003 + i)
    key = b"key:" + b"%d" % rng.randrange(300) * rng.randint(1, 3)
    return key, (None if rng.random() < 0.25 else _value(rng))


def _apply(state: dict[bytes, bytes], op: tuple[bytes, bytes | None]) -> None:
    key, value = op
    if value is None:
        state.pop(key, None)
    else:
        state[key] = value


def _child(path: str, seed: int, start: int, ack: int) -> None:
    """Run operations from ``start`` on, acknowledging each one once it has returned."""
    code = 1
    try:
        with KVStore.open(path, sync=False) as store:
            os.write(ack, READY)
            for i in range(start, 1 << 30):
                key, value = _op(seed, i)
                if value is None:
                    store.delete(key)
                else:
                    store.put(key, value)
                os.write(ack, struct.pack("<I", i))  # 4 bytes: atomic on a pipe
    except BaseException:
        code = 2
    finally:
        os._exit(code)


def test_sigkill(core: str, path: str) -> None:
    seed = 7
    timing = random.Random(seed)
    KVStore.open(path, sync=False).close()
    done = 0  # the file holds exactly the effect of operations [0, done)
    state: dict[bytes, bytes] = {}
    progress = []
    in_flight_kept = 0  # kills after which the unacknowledged operation had taken effect
    for kill in range(KILLS):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _child(path, seed, done, w)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            # Opening takes a while (longest on the pure-Python core): every other round starts
            # the clock once the child is open, so that most kills land inside operations.
            ready = f.read(4) if kill % 2 else b""
            time.sleep(timing.uniform(0.005, 0.05))
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            acks = ready + f.read()
        assert os.WIFSIGNALED(status), f"the child exited by itself: {status}"
        assert acks[:4] == READY or not acks, "the child failed to open the store"
        acks = acks[4:]
        assert len(acks) % 4 == 0
        acked = struct.unpack_from("<I", acks, len(acks) - 4)[0] + 1 if acks else done
        for i in range(done, acked):
            _apply(state, _op(seed, i))
        with_next = dict(state)  # the operation in flight may or may not have happened
        _apply(with_next, _op(seed, acked))

        with KVStore.open(path, sync=False) as store:
            found = dict(store.items())
            assert len(store) == len(found)
            assert all(store.get(key) == value for key, value in found.items())
        if found == with_next:
            in_flight_kept += found != state
            state, done = with_next, acked + 1
        else:
            assert found == state, f"after {acked} acknowledged operations"
            done = acked
        progress.append(acked)
    assert done > 0, "no operation finished before any kill"
    print(f"kvstore SIGKILLs: {KILLS}, in flight and kept: {in_flight_kept}, acked: {progress}")
