"""atheris fuzz target: mutated mappedpages files through every entry point of the C core.

    fuzz/run.sh [libFuzzer options, e.g. -runs=1000000]  (coverage-guided, then replayed under ASan)

Each input is read as a recipe: which real base file to start from and which mutations to
apply (bit flips, bytes, 64-bit values in header fields, log words, truncation), at offsets
where the file's structures live, and whether to make the checksums match again afterwards,
so that the fuzzer spends its time inside validation rather than on the magic number and the
checksums. The file then goes through ``ReadOnlyPager.open`` (and a refresh), ``Pager.open``,
iteration, views, a snapshot, allocation, protected writes and the checker. Only
``MappedPageError`` and ``OSError`` may escape; a memory error aborts under ASan.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import warnings

import atheris

ASAN_MODULE = os.environ.get("MAPPEDPAGES_ASAN_MODULE")
if ASAN_MODULE:  # the sanitizer build stands in for the normal one
    spec = importlib.util.spec_from_file_location("mappedpages._mappedpages_c", ASAN_MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mappedpages._mappedpages_c"] = module
    spec.loader.exec_module(module)

import mappedpages as mp  # noqa: E402
from mappedpages import _backend  # noqa: E402
from mappedpages import format as fmt  # noqa: E402
from mappedpages.checker import check_file  # noqa: E402

atheris.instrument_all()  # coverage of the Python layer guides the mutations
warnings.simplefilter("ignore", mp.RecoveryWarning)  # damage is what every input is made of

SCRATCH = os.path.join(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None), "f")
MAGICS = {fmt.BITMAP_LEAF, fmt.BITMAP_NODE, fmt.DIR_LEAF, fmt.DIR_NODE}
# fmt: off
RECORD_FIELDS = [0, 4, 8, 16, 24, 32, 40, 48, 56, 64, 72, 76, 77, 78, 79, 80, 88, 92, 96, 100]
BOUNDARY = [0, 1, 2, 3, 4, 7, 16, 62, 254, 2623, 2624, 10816, 2**31, 2**32 - 1, 2**32, 2**48,
            2**60, 2**63, 2**64 - 1]
# fmt: on


def _bases() -> list[bytes]:
    """Fresh; busy (protected pages in two directory leaves, a checkpoint, then a log of
    protected writes and frees); across several bitmap leaves with pages pending at its
    checkpoint; and 4 KiB pages whose newest record logs protected writes."""
    out = []
    with _backend.using("python"):
        for setup in range(4):
            path = SCRATCH + f".base{setup}"
            with mp.Pager.create(path, 4096 if setup == 3 else 1024, sync=False) as p:
                if setup == 1:
                    ids = p.alloc_bulk(40)
                    p.free_bulk(ids[::2])
                    prot = p.alloc_protected_bulk(65)
                    p._core.checkpoint_now()
                    with prot[3].get_mut(p) as w:
                        w.page_mut()[:4] = b"data"
                    p.free_protected(prot[7])
                elif setup == 2:
                    ids = p.alloc_bulk(6000)  # three bitmap leaves of 2624 pages
                    p.alloc_protected()
                    with p.snapshot():  # its pages stay pending at the checkpoint
                        p.free_bulk(ids[::5])
                        p._core.checkpoint_now()
                    p.free_bulk(ids[1:20:5])
                elif setup == 3:
                    for ppid in p.alloc_protected_bulk(4)[1:3]:
                        with ppid.get_mut(p) as w:
                            w.page_mut()[:2] = b"ok"
            with open(path, "rb") as f:
                out.append(f.read())
            os.unlink(path)
    return out


def _hot(data: bytes) -> tuple[list[int], list[int]]:
    """Where a base's structures are: the identity, both records' header fields, listed pages
    and log words, and the header and first and last entries of every tree block; and, apart,
    the log words."""
    ps = int.from_bytes(data[12:16], "little")
    geo = fmt.Geometry(ps)
    hot = [0, 8, 12, 16, 24, 32, 48, 60]
    log = []
    for page in (1, 2):
        off = page * ps
        hot += [off + f for f in RECORD_FIELDS]
        hot += [off + fmt.LISTED_OFFSET + 16 * i + f for i in range(fmt.LISTED_MAX) for f in (0, 8)]
        log_len = int.from_bytes(data[off + 92 : off + 96], "little")
        words = min(log_len // 8 + 2, (geo.block - fmt.LOG_OFFSET) // 8)  # and just past it
        log += [off + fmt.LOG_OFFSET + 8 * i for i in range(words)]
    hot += log
    for page in range(3, len(data) // ps):
        off = page * ps
        if data[off : off + 4] in MAGICS:
            hot += [off + f for f in (0, 4, 8, 16, 24, 32, 40, 44, 48, 56)]
            hot.append(off + 32 + 16 * (geo.fanout - 1))
    return hot, log


def reseal(data: bytearray) -> None:
    """Make the checksums match the bytes again (tests/test_hostile.py's reseal): the identity,
    every block (leaves first, then nodes by level) and every pointer to one, and each record's
    log and header."""
    crc = mp.crc32c
    if len(data) < 64:
        return
    data[60:64] = crc(bytes(data[0:60])).to_bytes(4, "little")
    ps = int.from_bytes(data[12:16], "little")
    if not fmt.valid_page_size(ps):
        return
    geo = fmt.Geometry(ps)
    block = geo.block

    def crc_of(page: int) -> int | None:
        off = page * ps
        if page >= 3 and off + block <= len(data) and bytes(data[off : off + 4]) in MAGICS:
            return int.from_bytes(data[off + 4 : off + 8], "little")
        return None

    blocks = []
    for page in range(3, len(data) // ps):
        off = page * ps
        if bytes(data[off : off + 4]) in MAGICS:
            level = int.from_bytes(data[off + 24 : off + 32], "little") >> fmt.LEVEL_SHIFT
            blocks.append((level if data[off + 3 : off + 4] == b"N" else 0, off))
    for _, off in sorted(blocks):
        if data[off + 3 : off + 4] == b"N":
            for i in range(geo.fanout):
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
        log = bytes(data[off + 256 : off + 256 + log_len])
        data[off + 96 : off + 100] = crc(log).to_bytes(4, "little")
        end = off + fmt.LISTED_OFFSET + 16 * min(data[off + 79], fmt.LISTED_MAX)
        data[off + 4 : off + 8] = crc(bytes(data[off + 8 : end])).to_bytes(4, "little")


BASES = _bases()
HOT = [_hot(base) for base in BASES]


def _value(fdp: atheris.FuzzedDataProvider) -> int:
    if fdp.ConsumeBool():
        return BOUNDARY[fdp.ConsumeIntInRange(0, len(BOUNDARY) - 1)]
    return fdp.ConsumeInt(8) % (1 << 64)


def _exercise(reader: mp.ReadOnlyPager | mp.Pager) -> None:
    for pid in list(reader.iter_allocated_pages())[:100]:
        bytes(reader.get_page(pid)[:4])
    for ppid in reader.iter_allocated_protected_pages():
        bytes(reader.get_protected_page(ppid)[:4])
    if isinstance(reader, mp.Pager):
        with reader.snapshot() as snap:
            reader.free(reader.alloc())
            ppid = reader.alloc_protected()
            with ppid.get_mut(reader) as w:
                w.page_mut()[:2] = b"ok"
            reader.free_protected(ppid)
            for pid in list(snap.iter_allocated_pages())[:100]:
                bytes(snap.get_page(pid)[:4])
            for ppid in snap.iter_allocated_protected_pages():
                bytes(snap.get_protected_page(ppid)[:4])
    else:
        reader.refresh()


def one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    which = fdp.ConsumeIntInRange(0, len(BASES) - 1)
    data = bytearray(BASES[which])
    hot, log = HOT[which]
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        if not data:
            break
        kind = fdp.ConsumeIntInRange(0, 5)
        if kind == 4 and log:
            at = log[fdp.ConsumeIntInRange(0, len(log) - 1)]
        elif fdp.ConsumeBool():
            at = hot[fdp.ConsumeIntInRange(0, len(hot) - 1)] % len(data)
        else:
            at = fdp.ConsumeIntInRange(0, len(data) - 1)
        if kind == 0:
            data[at] ^= 1 << fdp.ConsumeIntInRange(0, 7)
        elif kind == 1:
            data[at] = fdp.ConsumeInt(1) & 0xFF
        elif kind in (2, 4):  # a field, or a log word (its kind in the top four bits)
            data[at : at + 8] = _value(fdp).to_bytes(8, "little")
        elif kind == 3:
            del data[fdp.ConsumeIntInRange(0, len(data)) :]
        else:
            data[at : at + 16] = fdp.ConsumeBytes(16)
    if fdp.ConsumeBool():
        reseal(data)  # so that the edits reach the checks behind the checksums
    with open(SCRATCH, "wb") as f:
        f.write(data)
    for opener in (mp.ReadOnlyPager.open, lambda path: mp.Pager.open(path, sync=False)):
        try:
            with opener(SCRATCH) as reader:
                _exercise(reader)
        except (mp.MappedPageError, OSError):
            pass
    check_file(SCRATCH, mp.crc32c)


if __name__ == "__main__":
    assert mp.core == "c", "the fuzz target is for the C core"
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
