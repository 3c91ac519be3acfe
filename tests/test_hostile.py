"""Hostile files: whatever the bytes, the library raises MappedPageError or OSError, never worse.

Hypothesis mutates real files (bit flips, random bytes, huge and boundary values in every
header field, truncation) and each result goes through ``Pager.open``, ``ReadOnlyPager.open``,
iteration, views, a few calls and the checker. The C core is also fed mutated files directly
under AddressSanitizer (tests/test_c_sanitizers.py). ``MAPPEDPAGES_HOSTILE`` sets the number
of examples per core (default 3000).
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mappedpages as mp
from helpers import count
from mappedpages import _backend
from mappedpages import format as fmt
from mappedpages.checker import check_file

# slow: a proof, run in full by the first run of .ci/run (the installed wheel's run
# leaves the slow tests out)
pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("MAPPEDPAGES_HOSTILE", "3000"))
# the pure core checks the first 2000 of the same inputs in CI: twice as slow per input, it
# would take half of the proof's time otherwise
PURE_EXAMPLES = int(os.environ.get("MAPPEDPAGES_HOSTILE", "2000"))
PS = 1024
_counter = {"inputs": 0}


def _make_bases() -> dict[str, bytes]:
    """Small real files: fresh; busy with protected pages and a non-empty log; one across
    several bitmap leaves, just after a checkpoint; one of 4 KiB pages with freed pages still
    pending; and a format-1 file."""
    bases = {}
    with tempfile.TemporaryDirectory() as tmp, _backend.using("python"):
        for name in ("fresh", "busy", "leaves", "pending4k"):
            path = os.path.join(tmp, name)
            with mp.Pager.create(path, 4096 if name == "pending4k" else PS, sync=False) as p:
                if name == "busy":
                    ids = p.alloc_bulk(40)
                    p.free_bulk(ids[::2])
                    prot = p.alloc_protected_bulk(65)  # two directory leaves
                    p._core.checkpoint_now()
                    with prot[3].get_mut(p) as w:
                        w.page_mut()[:4] = b"data"
                    p.free_protected(prot[7])
                elif name == "leaves":
                    p.alloc_bulk(6000)
                    p.alloc_protected()
                    p._core.checkpoint_now()
                elif name == "pending4k":
                    prot = p.alloc_protected_bulk(5)
                    with p.snapshot():  # its commit's pages stay pending while it lives
                        for i in (1, 3, 1):
                            with prot[i].get_mut(p) as w:
                                w.page_mut()[:4] = b"log%d" % i
                        p.free_bulk(p.alloc_bulk(3))
                        p._core.checkpoint_now()
            with open(path, "rb") as f:
                bases[name] = f.read()
    here = os.path.dirname(os.path.abspath(__file__))
    with gzip.open(os.path.join(here, "data", "v1-4k.mp.gz"), "rb") as f:
        bases["format1"] = f.read()
    return bases


BASES = _make_bases()


def _hot(data: bytes) -> list[int]:
    """Offsets where a base file's structures live: the identity, both records' fields and
    listed pages and log, and the header and first entries of every tree block."""
    ps = int.from_bytes(data[12:16], "little") or PS
    out = [0, 8, 12, 16, 24, 32, 60]
    for page in (1, 2):
        out += [
            page * ps + f
            for f in (
                0,
                4,
                8,
                16,
                24,
                32,
                40,
                48,
                56,
                64,
                72,
                76,
                77,
                78,
                79,
                80,
                88,
                92,
                96,
                128,
                140,
                256,
                264,
                272,
            )
        ]
    for page in range(3, len(data) // ps):
        if data[page * ps : page * ps + 4] in MAGICS:
            out += [page * ps + f for f in (0, 4, 8, 16, 24, 32, 40, 44, 48, 56)]
    return out


# fmt: off
MAGICS = {fmt.BITMAP_LEAF, fmt.BITMAP_NODE, fmt.DIR_LEAF, fmt.DIR_NODE}
HOT = {name: _hot(data) for name, data in BASES.items()}
BOUNDARY = [0, 1, 2, 3, 4, 7, 16, 62, 2623, 2624, 10816, 2**31, 2**32 - 1, 2**32, 2**48,
            2**60, 2**63, 2**64 - 1]
# fmt: on


@st.composite
def hostile_file(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(BASES)))
    data = bytearray(BASES[name])
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "byte", "u64", "u32", "zero", "truncate", "junk"]))
        at = draw(st.one_of(st.sampled_from(HOT[name]), st.integers(0, len(data) - 1)))
        at = min(at, len(data) - 1)
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind in ("u64", "u32"):
            size = 8 if kind == "u64" else 4
            value = draw(st.one_of(st.sampled_from(BOUNDARY), st.integers(0, 2**64 - 1)))
            data[at : at + size] = (value % (1 << (8 * size))).to_bytes(size, "little")
        elif kind == "zero":
            end = at + draw(st.integers(1, 600))
            data[at:end] = bytes(len(data[at:end]))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        else:
            data[at : at + 64] = draw(st.binary(min_size=64, max_size=64))
    if draw(st.booleans()) and len(data) >= 4096:
        reseal(data)  # make checksums match again, so the checks behind them are reached
    return bytes(data)


def reseal(data: bytearray) -> None:
    """Make every checksum of a (mutated) format-2 file match its bytes again: the identity,
    every block (leaves first, then nodes by level), every pointer to a block, and each
    record's log and header."""
    crc = mp.crc32c
    data[60:64] = crc(bytes(data[0:60])).to_bytes(4, "little")
    ps = int.from_bytes(data[12:16], "little")
    if not fmt.valid_page_size(ps):
        return
    block = min(ps, fmt.MAX_BLOCK)
    blocks = []
    for page in range(3, len(data) // ps):
        off = page * ps
        if bytes(data[off : off + 4]) in MAGICS and len(data) >= off + block:
            level = int.from_bytes(data[off + 24 : off + 32], "little") >> fmt.LEVEL_SHIFT
            blocks.append((level if data[off + 3 : off + 4] == b"N" else 0, off))

    def crc_of(page: int) -> int | None:
        off = page * ps
        if page >= 3 and off + block <= len(data) and bytes(data[off : off + 4]) in MAGICS:
            return int.from_bytes(data[off + 4 : off + 8], "little")
        return None

    for _, off in sorted(blocks):
        if data[off + 3 : off + 4] == b"N":  # a node: its pointers name its children's crcs
            for i in range(fmt.Geometry(ps).fanout):
                at = off + 32 + 16 * i
                child = crc_of(int.from_bytes(data[at : at + 8], "little"))
                if child is not None:
                    data[at + 8 : at + 12] = child.to_bytes(4, "little")
        data[off + 4 : off + 8] = crc(bytes(data[off + 8 : off + block])).to_bytes(4, "little")
    for page in (1, 2):
        off = page * ps
        if len(data) < off + block or data[off : off + 4] != fmt.RECORD_MAGIC:
            continue
        for root in (64, 80):
            child = crc_of(int.from_bytes(data[off + root : off + root + 8], "little"))
            if child is not None:
                data[off + root + 8 : off + root + 12] = child.to_bytes(4, "little")
        log_len = min(int.from_bytes(data[off + 92 : off + 96], "little"), block - 256)
        data[off + 96 : off + 100] = crc(bytes(data[off + 256 : off + 256 + log_len])).to_bytes(
            4, "little"
        )
        listed = min(data[off + 79], fmt.LISTED_MAX)
        end = off + fmt.LISTED_OFFSET + 16 * listed
        data[off + 4 : off + 8] = crc(bytes(data[off + 8 : end])).to_bytes(4, "little")


def _exercise(reader: mp.ReadOnlyPager | mp.Pager) -> None:
    for pid in list(reader.iter_allocated_pages())[:200]:
        bytes(reader.get_page(pid)[:8])
    for ppid in reader.iter_allocated_protected_pages():
        bytes(reader.get_protected_page(ppid)[:8])
    if isinstance(reader, mp.Pager):
        pid = reader.alloc()
        reader.free(pid)
        ppid = reader.alloc_protected()
        with ppid.get_mut(reader) as w:
            w.page_mut()[:2] = b"ok"
        reader.free_protected(ppid)


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    where = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        yield os.path.join(tmp, "hostile.mp")


@pytest.mark.parametrize("core_name", ["c", "python"])
def test_hostile_files_never_crash(core_name: str, scratch: str) -> None:
    @settings(
        max_examples=EXAMPLES if core_name == "c" else PURE_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(image=hostile_file())
    def run(image: bytes) -> None:
        _counter["inputs"] += 1
        count("hostile files (Python layer and checker)")
        with open(scratch, "wb") as f:
            f.write(image)
        for opener in (mp.ReadOnlyPager.open, lambda path: mp.Pager.open(path, sync=False)):
            try:
                with opener(scratch) as reader:
                    _exercise(reader)
            except (mp.MappedPageError, OSError):
                pass
        report = check_file(scratch, mp.crc32c)
        assert isinstance(report.ok, bool)

    with _backend.using(core_name):
        run()
    print(f"hostile inputs so far: {_counter['inputs']}")
