"""Hostile files: whatever the bytes, the library raises MappedPageError or OSError, never worse.

Hypothesis mutates real files (bit flips, random bytes, huge and boundary values in every
header field, truncation) and each result goes through ``Pager.open``, ``ReadOnlyPager.open``,
iteration, views, a few calls and the checker. The C core is also fed mutated files directly
under AddressSanitizer (tests/test_c_sanitizers.py). ``MAPPEDPAGES_HOSTILE`` sets the number
of examples per core (default 3000).
"""

from __future__ import annotations

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

EXAMPLES = int(os.environ.get("MAPPEDPAGES_HOSTILE", "3000"))
PS = 1024
_counter = {"inputs": 0}


def _make_bases() -> dict[str, bytes]:
    """Small real files: fresh, busy with protected pages, one that has bitmap group 1, and one
    of 4 KiB pages whose commit records log protected writes."""
    bases = {}
    with tempfile.TemporaryDirectory() as tmp, _backend.using("python"):
        for name in ("fresh", "busy", "group1", "logged"):
            path = os.path.join(tmp, name)
            with mp.Pager.create(path, 4096 if name == "logged" else PS, sync=False) as p:
                if name == "logged":
                    prot = p.alloc_protected_bulk(5)
                    for i in (1, 3, 1):
                        with prot[i].get_mut(p) as w:
                            w.page_mut()[:4] = b"log%d" % i
                    p.alloc_bulk(3)
                elif name == "busy":
                    ids = p.alloc_bulk(40)
                    p.free_bulk(ids[::2])
                    prot = p.alloc_protected_bulk(65)  # two directory blocks
                    with prot[3].get_mut(p) as w:
                        w.page_mut()[:4] = b"data"
                elif name == "group1":
                    p.alloc_bulk(7200)
                    p.alloc_protected()
            with open(path, "rb") as f:
                bases[name] = f.read()
    return bases


BASES = _make_bases()
# offsets where the structures live: superblock, commit records, both metadata blocks and their
# fields, group 1's copies (page 7168 for 1 KiB pages), and the first directory pages
RECORDS = [fmt.RECORD_OFFSET + i * fmt.RECORD_SIZE for i in (0, 1)]
# fmt: off
HOT = [
    0, 8, 12, 60,
    *(r + f for r in RECORDS for f in (0, 4, 8, 16, 20, 24, 32, 36, 508)),
    PS, PS + 32, PS + 40, PS + 48, PS + 56, PS + 128, 4096 + 32, 8192 + 32,
    2 * PS, 2 * PS + 32, 2 * PS + 48,
    7168 * PS, 7168 * PS + 32, 7169 * PS,
] + [p * PS + off for p in range(3, 12) for off in (0, 32, 64, 72)]
# fmt: on
BOUNDARY = [0, 1, 2, 3, 7, 16, 7167, 7168, 7169, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1]


@st.composite
def hostile_file(draw: st.DrawFn) -> bytes:
    data = bytearray(BASES[draw(st.sampled_from(sorted(BASES)))])
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "byte", "u64", "u32", "zero", "truncate", "junk"]))
        at = draw(st.one_of(st.sampled_from(HOT), st.integers(0, len(data) - 1)))
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
    if draw(st.booleans()) and len(data) >= 1024:
        _reseal(data)  # make checksums match again, so the checks behind them are reached
    return bytes(data)


def _reseal(data: bytearray) -> None:
    """Recompute the identity, commit record and metadata checksums after a mutation."""
    crc = mp.crc32c
    data[60:64] = crc(bytes(data[0:60])).to_bytes(4, "little")
    ps = int.from_bytes(data[12:16], "little")
    ps = ps if fmt.valid_page_size(ps) else PS
    block = min(ps, fmt.MAX_BLOCK)
    for page in (1, 2):
        off = page * ps
        if len(data) >= off + block and data[off : off + 4] == fmt.META_MAGIC:
            data[off + 4 : off + 8] = crc(bytes(data[off + 8 : off + block])).to_bytes(4, "little")
    for off in RECORDS[: fmt.record_count(ps)]:
        if len(data) < off + fmt.RECORD_SIZE:
            continue
        active = int.from_bytes(data[off + 4 : off + 8], "little")
        if active in (0, 1) and len(data) >= (2 + active) * ps:
            data[off + 16 : off + 20] = data[(1 + active) * ps + 4 : (1 + active) * ps + 8]
        end = off + fmt.RECORD_CRC_OFFSET
        data[end : end + 4] = crc(bytes(data[off:end])).to_bytes(4, "little")


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
        max_examples=EXAMPLES,
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
