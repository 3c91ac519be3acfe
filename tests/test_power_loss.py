"""Simulated power loss at every sync barrier of every mutating call.

At each barrier the file's current bytes (the page cache) are compared with the image made
durable by the previous barrier. A power cut before this barrier completes leaves the durable
image plus any subset of the pages written since, and any page may be torn at a 512-byte
sector (or hold garbage there). Every such image must open, pass the checker, and show
exactly the state before the call or the state after it. Growth is not durable until a
barrier, so images also come at the old length.

While the workloads run, a snapshot of another reader is registered and moves on now and
then, so that the writer keeps pages pending; and beside every image lies a reader table as a
crash may leave it: missing, stale (the live table's bytes, whose readers are not alive for
the image), torn, or garbage. None of it may change what the image opens to.
"""

from __future__ import annotations

import itertools
import os
import random
import struct
from collections.abc import Callable, Iterator

import pytest

import mappedpages as mp
from helpers import COUNTS, check_ok, count, pager_state
from mappedpages._core_api import FREE
from mappedpages.checker import check_file
from mappedpages.handles import ProtectedPageId

# slow: a proof, run in full by the first run of .ci/run (the installed wheel's run
# leaves the slow tests out)
pytestmark = pytest.mark.slow

SECTOR = 512
PS = 1024


class Harness:
    def __init__(self, path: str, tmp: str, ps: int = PS) -> None:
        self.ps = ps
        self.path = path
        self.tmp = tmp
        self.durable = self._read()
        self.seen: list[object] = []  # the state each image opened to, checked after the call
        self.images = 0
        self.logged = 0  # images whose commit record carries logged protected writes
        self.one_barrier = 0  # commits whose only barrier was the second
        self._last = "barrier2"
        self.rng = random.Random(99)
        self.kinds: list[str] = []  # the barriers met, in order
        self.check_each: Callable[[mp.Pager], None] | None = None  # more to check per image

    def _read(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def barrier(self, kind: str) -> None:
        self.kinds.append(kind)
        if kind == "barrier2" and self._last != "barrier1":
            self.one_barrier += 1
            count("one-barrier commits cut at their barrier")
        self._last = kind
        current = self._read()
        old, ps = self.durable, self.ps
        # pages whose bytes changed (new space reads as zeros, so growth alone is no change)
        pages = [
            i
            for i in range(0, len(current), ps)
            if old[i : i + ps].ljust(len(current[i : i + ps]), b"\0") != current[i : i + ps]
        ]
        for img in self._images(old, current, pages):
            self._verify(img)
        self.durable = current

    def _images(self, old: bytes, current: bytes, pages: list[int]) -> Iterator[bytes]:
        if len(pages) <= 10:
            subsets: list[tuple[int, ...]] = [
                c for r in range(len(pages) + 1) for c in itertools.combinations(pages, r)
            ]
        else:
            subsets = [(), tuple(pages), *((p,) for p in pages)]
            subsets += [tuple(q for q in pages if q != p) for p in pages]
            subsets += [tuple(self.rng.sample(pages, len(pages) // 2)) for _ in range(5)]
        ps = self.ps
        torn = pages if len(pages) <= 10 else self.rng.sample(pages, 10)
        for length in sorted({len(old), len(current)}):
            base = old[:length].ljust(length, b"\0")
            for subset in subsets if length == len(current) else [()]:
                img = bytearray(base)
                for off in subset:
                    if off < length:
                        img[off : off + ps] = current[off : off + ps]
                yield bytes(img)
            for off in torn:
                if off >= length:
                    continue
                for k in range(1, ps // SECTOR):  # the first k sectors of one page landed
                    img = bytearray(base)
                    img[off : off + k * SECTOR] = current[off : off + k * SECTOR]
                    yield bytes(img)
                for sec in range(off, off + ps, SECTOR):  # a sector caught mid-write: garbage
                    if old[sec : sec + SECTOR] != current[sec : sec + SECTOR]:
                        img = bytearray(base)
                        img[sec : sec + SECTOR] = self.rng.randbytes(SECTOR)
                        yield bytes(img)

    def _verify(self, image: bytes) -> None:
        self.images += 1
        probe = os.path.join(self.tmp, "probe.mp")
        with open(probe, "wb") as f:
            f.write(image)
        self._table_after_crash(probe)
        report = check_file(probe, mp.crc32c)
        assert report.ok, report.problems
        if report.log_words:
            self.logged += 1
            count("crash images: the state in force carries a log")
        snapshot = None
        if self.images % 3 == 0:  # a reader sees what the writer will open
            with mp.ReadOnlyPager.open(probe) as ro:
                snapshot = pager_state(ro)
        with mp.Pager.open(probe, sync=False) as p:
            self.seen.append(pager_state(p))
            if self.check_each is not None:
                self.check_each(p)
        assert snapshot in (None, self.seen[-1])
        count("crash images: opened, checked, state compared")
        if self.images % 8 == 0:  # and life goes on after the crash
            _continue_on(probe)
            count("crash images: workload continued on them")
        os.unlink(probe)

    def _table_after_crash(self, probe: str) -> None:
        """The reader table beside the image, as a crash may leave it (one kind per image)."""
        table = probe + "-readers"
        kind = self.images % 4
        if os.path.exists(table):
            os.unlink(table)
        live = self.path + "-readers"
        if kind == 0 or not os.path.exists(live):
            count("crash images: no reader table")
            return
        with open(live, "rb") as f:
            stale = f.read()
        if kind == 1:
            data, what = stale, "stale (its readers gone)"
        elif kind == 2:
            cut = self.rng.randrange(1, len(stale))
            data, what = stale[:cut] + self.rng.randbytes(512)[: len(stale) - cut], "torn"
        else:
            data, what = self.rng.randbytes(len(stale)), "garbage"
        with open(table, "wb") as f:
            f.write(data)
        count(f"crash images: reader table {what}")

    def settle(self, before: object, after: object) -> None:
        """Every image made during the call showed the state before it or after it."""
        for state in self.seen:
            assert state in (before, after), "an image shows neither the old nor the new state"
        self.seen.clear()


def _continue_on(path: str) -> None:
    """Recover from a crash image, change it, and check that the change sticks."""
    with mp.Pager.open(path, sync=True) as p:
        regular = list(p.iter_allocated_pages())
        if regular:
            p.free(regular[-1])
        p.alloc_bulk(2)
        ppid = p.alloc_protected()
        with ppid.get_mut(p) as w:
            w.page_mut()[:5] = b"after"
        expected = pager_state(p)
    check_ok(path)
    with mp.Pager.open(path) as p:
        assert pager_state(p) == expected
        assert bytes(p.get_protected_page(ppid)[:5]) == b"after"


@pytest.mark.parametrize(
    ("ps", "prefill"),
    [(PS, 0), (PS, 7300), (4096, 0), (2048, 15500)],
    ids=["group0", "group1", "group0-4k", "group1-2k"],
)
def test_every_barrier_of_every_call(core: str, tmp_path: object, ps: int, prefill: int) -> None:
    # prefill 7300 pages of 1 KiB: the workload then runs across bitmap group 0 (the metadata
    # pages) and group 1 (its own two copy pages from 7168 on), alternating both copies of each.
    # From 2 KiB pages on, page 0 holds two records and most commits take one barrier; group 1
    # of 2 KiB pages begins at page 15360
    tmp = str(tmp_path)
    path = os.path.join(tmp, "crash.mp")
    with mp.Pager.create(path, ps) as p:
        live: list[mp.PageId] = [x for x in p.alloc_bulk(prefill) if int(x) > prefill - 300]
    h = Harness(path, tmp, ps)
    rng = random.Random(5)
    with mp.Pager.open(path, sync=True) as p, mp.ReadOnlyPager.open(path) as reader:
        p._core.set_barrier_hook(h.barrier)

        def step(call: Callable[[], object], expect: Callable[[list[int]], list[int]]) -> object:
            before = pager_state(p)
            result = call()
            after = pager_state(p)
            assert after[0] == expect(list(before[0]))
            h.settle(before, after)
            return result

        for i in range(160 if prefill == 0 else 80 if ps == PS else 20):
            if i % 7 == 0:
                reader.refresh()  # the reader moves on: what it held may be reused now
            kind = rng.choice(["alloc", "free", "bulk", "free_bulk", "batch", "flush"])
            if kind == "flush" and live:  # data written through a view, then flushed
                p.get_page_mut(live[0])[:4] = rng.randbytes(4)
                target = [live[0]] if i % 2 else None
                step(lambda t=target: p.flush(t), lambda s: s)  # type: ignore[misc]
            elif kind == "alloc" or not live:
                nxt = _lowest_free(p)
                live.append(step(p.alloc, lambda s, n=nxt: sorted(s + n)))  # type: ignore[arg-type]
            elif kind == "free":
                victim = live.pop(rng.randrange(len(live)))
                step(lambda v=victim: p.free(v), lambda s, v=victim: [x for x in s if x != int(v)])
            elif kind == "bulk":
                n = rng.randint(1, 900 if i % 10 == 0 else 20)  # sometimes grows the file
                new = _lowest_free(p, n)
                got = step(lambda n=n: p.alloc_bulk(n), lambda s, new=new: sorted(s + new))
                live += got  # type: ignore[arg-type]
            elif kind == "free_bulk":
                victims = rng.sample(live, min(len(live), 5))
                gone = {int(v) for v in victims}
                step(
                    lambda v=victims: p.free_bulk(v), lambda s, g=gone: [x for x in s if x not in g]
                )
                live = [x for x in live if int(x) not in gone]
            else:
                nxt = _lowest_free(p)
                victim = live.pop(0)

                def batch(v: mp.PageId = victim) -> mp.PageId:
                    with p.batch():
                        got = p.alloc()
                        p.free(v)
                    return got

                live.append(
                    step(
                        batch, lambda s, n=nxt, v=victim: sorted([x for x in s if x != int(v)] + n)
                    )  # type: ignore[arg-type]
                )
        p._core.set_barrier_hook(None)
    assert h.images > (600 if prefill == 0 else 350 if ps == PS else 100)
    assert h.one_barrier > 0 and h.logged > 0
    print(f"power-loss images checked: {h.images}")


def _lowest_free(p: mp.Pager, n: int = 1) -> list[int]:
    """The n pages the next allocation will return: the lowest free ones that may be reused
    (not those a registered snapshot may still read), growth included."""
    p._core.reclaim()  # what every mutating call does first
    count = p.page_count
    out: list[int] = []
    i = 3
    while len(out) < n:
        if i >= count or p._core.kind(i) == FREE:
            out.append(i)
        i += 1
    return out


@pytest.mark.parametrize("ps", [1024, 4096])
def test_alloc_protected_on_zeros_not_yet_synced(core: str, tmp_path: object, ps: int) -> None:
    """alloc_protected does not rewrite a page that reads as zeros; when those zeros are only
    in the page cache (written through a stale handle after a free) the commit still makes
    them land, or a power cut shows the state before it."""
    tmp = str(tmp_path)
    path = os.path.join(tmp, "crash.mp")
    with mp.Pager.create(path, ps) as p:
        p.free_protected(p.alloc_protected())  # the directory, so that the call is one commit
        old = p.alloc_bulk(8)
        for pid in old:
            p.get_page_mut(pid)[:] = b"\xee" * ps
        p.flush()
        p.free_bulk(old)
    with mp.Pager.open(path, sync=True) as p:
        h = Harness(path, tmp, ps)  # durable: the freed pages hold 0xee
        for pid in old:  # zeros, in the page cache only
            p.get_page_mut(pid)[:] = bytes(ps)
        p._core.set_barrier_hook(h.barrier)
        before = pager_state(p)
        ppid = p.alloc_protected()
        h.settle(before, pager_state(p))
        p._core.set_barrier_hook(None)
        assert bytes(p.get_protected_page(ppid)) == bytes(ps)
    assert h.images > 10
    check_ok(path)


@pytest.mark.parametrize("ps", [1024, 4096])
def test_every_barrier_of_protected_calls(core: str, tmp_path: object, ps: int) -> None:
    """Protected writes, allocations and frees (single, bulk, in batches) are all-or-nothing.

    Most commits carry their changes in the record's log (a write: its content page and the
    record, one barrier); every few dozen a checkpoint writes the directory's and bitmap's
    changed leaves. A registered reader moves on now and then, so freed contents stay
    pending for a while."""
    tmp = str(tmp_path)
    path = os.path.join(tmp, "crash.mp")
    mp.Pager.create(path, ps).close()
    h = Harness(path, tmp, ps)
    rng = random.Random(8)
    with mp.Pager.open(path, sync=True) as p, mp.ReadOnlyPager.open(path) as reader:
        p._core.set_barrier_hook(h.barrier)
        live: list[ProtectedPageId] = []
        regular: list[mp.PageId] = []

        def write(ppid: ProtectedPageId) -> None:
            with ppid.get_mut(p) as w:
                w.page_mut()[rng.randrange(ps - 8) :][:8] = rng.randbytes(8)

        def step(call: Callable[[], object]) -> object:
            before = pager_state(p)
            result = call()
            h.settle(before, pager_state(p))
            return result

        # the pure core checksums every protected page in Python (about 100 ns a byte), and
        # every image reads them all: it takes a third of the steps
        for i in range(90 if core == "c" else 30):
            if i % 5 == 0:
                reader.refresh()
            kinds = ["alloc", "write", "write", "bulk", "free", "free_bulk", "batch", "regular"]
            kind = rng.choice(kinds)
            if kind == "regular":  # a commit of the allocation state carries the log along
                regular.append(step(p.alloc))  # type: ignore[arg-type]
            elif kind == "alloc" or not live:
                live.append(step(p.alloc_protected))  # type: ignore[arg-type]
            elif kind == "write":
                step(lambda: write(rng.choice(live)))
            elif kind == "bulk":
                n = rng.randint(2, 70 if i % 9 else 5)  # 60 entries per block: sometimes a new one
                live.extend(step(lambda n=n: p.alloc_protected_bulk(n)))  # type: ignore[misc]
            elif kind == "free":
                victim = live.pop(rng.randrange(len(live)))
                step(lambda v=victim: p.free_protected(v))  # type: ignore[misc]
            elif kind == "free_bulk":
                victims = rng.sample(live, min(len(live), 4))
                step(lambda v=victims: p.free_protected_bulk(v))  # type: ignore[misc]
                live[:] = [x for x in live if x not in victims]
            else:

                def batch() -> None:
                    with p.batch():
                        new = p.alloc_protected()
                        write(new)
                        write(rng.choice(live))
                        write(new)  # a second write of a page made in this batch: in place
                        regular.append(p.alloc())
                        victim = live.pop(0)
                        p.free_protected(victim)
                        live.append(new)

                step(batch)
        p._core.set_barrier_hook(None)
    assert h.images > (1000 if core == "c" else 300)
    assert h.logged > 100 and h.one_barrier > 0, (h.logged, h.one_barrier)
    print(f"power-loss images checked (protected calls): {h.images}")


@pytest.mark.parametrize("writes", ["views", "write_page"])
def test_every_barrier_of_a_copy_on_write_step(core: str, tmp_path: object, writes: str) -> None:
    """The step every copy-on-write structure takes: new pages written and flushed (twice, as
    a structure writing its nodes in turn would), a protected root switched to them and the
    pages it named before freed, in one batch. The flushes ride on the commit: written through
    views, each step meets exactly two barriers, the data pages' and the record's; written with
    write_page, the pages are sealed and the record vouches for them, so each step meets one.
    Every image of every barrier opens to the state before or after, and the pages the root
    names hold what was written for them: a crash never shows the new root with a data page
    that did not land."""
    tmp, ps = str(tmp_path), PS
    path = os.path.join(tmp, "crash.mp")
    with mp.Pager.create(path, ps) as p:
        root = p.alloc_protected()
        p.alloc_bulk(30)
    h = Harness(path, tmp, ps)

    def content(step: int, i: int) -> bytes:
        return struct.pack("<QQ", step, i) * (ps // 16)  # a torn page shows

    def root_names_landed_pages(image: mp.Pager) -> None:
        step, n = struct.unpack_from("<QQ", image.get_protected_page(root))
        named = struct.unpack_from(f"<{n}Q", image.get_protected_page(root), 16)
        for i, index in enumerate(named):
            assert bytes(image.get_page(mp.PageId(index, ps))) == content(step, i), (step, i)
        count("crash images: the root's pages read back as written")

    h.check_each = root_names_landed_pages
    with mp.Pager.open(path, sync=True) as p:
        p._core.set_barrier_hook(h.barrier)
        nodes: list[mp.PageId] = []
        for step in range(1, 7):
            before = pager_state(p)
            h.kinds.clear()
            with p.batch():
                new = p.alloc_bulk(12)
                for i, pid in enumerate(new):
                    if writes == "views":
                        p.get_page_mut(pid)[:] = content(step, i)
                    else:
                        p.write_page(pid, content(step, i))
                    if i == 5:
                        p.flush(new[:6])
                p.flush(new[6:])
                with root.get_mut(p) as w:
                    w.page_mut()[: 16 + 8 * len(new)] = struct.pack(
                        f"<QQ{len(new)}Q", step, len(new), *map(int, new)
                    )
                if nodes:
                    p.free_bulk(nodes)
            expected = ["barrier1", "barrier2"] if writes == "views" else ["barrier2"]
            assert h.kinds == expected, h.kinds
            h.settle(before, pager_state(p))
            nodes = new
        p._core.set_barrier_hook(None)
    assert COUNTS["crash images: the root's pages read back as written"] > 200


@pytest.mark.parametrize(
    "how", ["write_page", "a view", "write_page in a batch", "a view in a batch"]
)
def test_a_sealed_page_is_retired_before_it_is_written(
    core: str, tmp_path: object, how: str
) -> None:
    """A page the record in force vouches for (sealed by a one-barrier commit), written again,
    first retires that record: a copy listing nothing goes into the other slot, with a barrier
    of its own, before the write can reach the disk. Every image of every barrier, the
    retirement's and those after the write, opens to the sealed commit's state, never to the
    one before it (which a listed page that no longer matches would fall back to); and the
    page is retired once, not at every write."""
    tmp, ps = str(tmp_path), PS
    path = os.path.join(tmp, "crash.mp")
    with mp.Pager.create(path, ps) as p:
        p.alloc_bulk(30)
    h = Harness(path, tmp, ps)
    with mp.Pager.open(path, sync=True) as p:
        p._core.set_barrier_hook(h.barrier)
        for round_ in range(3):
            before = pager_state(p)
            h.kinds.clear()
            with p.batch():
                new = p.alloc_bulk(4)
                for i, pid in enumerate(new):
                    p.write_page(pid, bytes([round_ * 4 + i + 1]) * ps)
                p.flush(new)
            assert h.kinds == ["barrier2"], h.kinds
            sealed = pager_state(p)
            h.settle(before, sealed)
            assert p._core.sealed_runs(), "the record in force vouches for the pages"

            def write(pid: mp.PageId, data: bytes) -> None:
                if how.startswith("write_page"):
                    p.write_page(pid, data)
                else:
                    p.get_page_mut(pid)[: len(data)] = data

            h.kinds.clear()
            if how.endswith("in a batch"):
                with p.batch():
                    write(new[0], b"again" * 8)
                    write(new[0], b"more" * 8)  # retired already: no second barrier
                    p.flush([new[0]])
                # retired, then the page flushed as any written in place: two barriers
                assert h.kinds == ["retire", "barrier1", "barrier2"], h.kinds
            else:
                write(new[0], b"again" * 8)
                write(new[1], b"more" * 8)
                assert h.kinds == ["retire"], h.kinds
                p.flush(new[:2])
                assert h.kinds == ["retire", "flush"], h.kinds
            assert not p._core.sealed_runs()
            h.settle(sealed, sealed)  # never the state before the sealed commit
            p.free_bulk(new[2:])
            h.settle(sealed, pager_state(p))
        p._core.set_barrier_hook(None)
    assert h.images > 50
    check_ok(path)


def test_every_barrier_of_a_shrink(core: str, tmp_path: object) -> None:
    """A shrink's commits (protected pages and tree blocks moved down, then the cut) are
    all-or-nothing like any other: every image opens to the pages and protected contents it
    had, and checks clean, however much of the cut the power loss let through."""
    tmp, ps = str(tmp_path), PS
    path = os.path.join(tmp, "crash.mp")
    with mp.Pager.create(path, ps) as p:
        p.alloc_bulk(200)
    h = Harness(path, tmp, ps)
    rng = random.Random(12)
    with mp.Pager.open(path, sync=True) as p, mp.ReadOnlyPager.open(path) as reader:
        p._core.set_barrier_hook(h.barrier)
        counts = []

        def step(call: Callable[[], object]) -> object:
            before = pager_state(p)
            result = call()
            h.settle(before, pager_state(p))
            return result

        def write(ppid: ProtectedPageId) -> None:
            with ppid.get_mut(p) as w:
                w.page_mut()[:8] = rng.randbytes(8)

        for i in range(12):
            if i % 3 == 0:
                reader.refresh()  # what the reader holds stays; the rest may go
            tail: list[mp.PageId] = step(lambda: p.alloc_bulk(rng.randint(300, 1500)))  # type: ignore[assignment]
            prot: list[ProtectedPageId] = step(lambda: p.alloc_protected_bulk(rng.randint(1, 4)))  # type: ignore[assignment]
            for ppid in prot:  # made after the tail: they move down
                step(lambda x=ppid: write(x))  # type: ignore[misc]
            step(lambda t=tail: p.free_bulk(t))  # type: ignore[misc]
            before, n = pager_state(p), p.page_count
            step(p.shrink)
            assert pager_state(p) == before
            counts.append(n - p.page_count)
            step(lambda x=prot[1:]: p.free_protected_bulk(x))  # type: ignore[misc]
        p._core.set_barrier_hook(None)
    assert sum(counts) > 1000, counts
    assert h.images > 100
    check_ok(path)
    count("shrinks cut at every barrier", len(counts))
