"""atheris fuzz target: mutated mappedpages files through every entry point of the C core.

    fuzz/run.sh [libFuzzer options, e.g. -runs=1000000]  (coverage-guided, then replayed under ASan)

Each input is read as a recipe: which real base file to start from and which mutations to
apply (bit flips, bytes, 64-bit values in header fields, truncation), so that the fuzzer
spends its time inside validation rather than on the magic number. The file then goes through
``ReadOnlyPager.open``, ``Pager.open``, iteration, views, allocation and the checker. Only
``MappedPageError`` and ``OSError`` may escape; a memory error aborts under ASan.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile

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
from mappedpages.checker import check_file  # noqa: E402

atheris.instrument_all()  # coverage of the Python layer guides the mutations

PS = 1024
SCRATCH = os.path.join(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None), "f")
# fmt: off
HOT = [
    0, 12, 60,                      # identity: magic, page size, checksum
    512, 516, 520, 528, 532,        # the commit record
    PS, PS + 32, PS + 40, PS + 48, PS + 56, PS + 128, 2 * PS, 2 * PS + 48,  # metadata
] + [p * PS + off for p in range(3, 12) for off in (0, 32, 64, 72)]
# fmt: on


def _bases() -> list[bytes]:
    out = []
    with _backend.using("python"):
        for setup in range(3):
            path = SCRATCH + f".base{setup}"
            with mp.Pager.create(path, PS, sync=False) as p:
                if setup >= 1:
                    ids = p.alloc_bulk(40)
                    p.free_bulk(ids[::2])
                    p.alloc_protected_bulk(65)
                if setup == 2:
                    p.alloc_bulk(7200)
            with open(path, "rb") as f:
                out.append(f.read())
            os.unlink(path)
    return out


BASES = _bases()


def one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    data = bytearray(BASES[fdp.ConsumeIntInRange(0, len(BASES) - 1)])
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        if not data:
            break
        kind = fdp.ConsumeIntInRange(0, 4)
        if fdp.ConsumeBool():
            at = HOT[fdp.ConsumeIntInRange(0, len(HOT) - 1)] % len(data)
        else:
            at = fdp.ConsumeIntInRange(0, len(data) - 1)
        if kind == 0:
            data[at] ^= 1 << fdp.ConsumeIntInRange(0, 7)
        elif kind == 1:
            data[at] = fdp.ConsumeInt(1) & 0xFF
        elif kind == 2:
            data[at : at + 8] = (fdp.ConsumeInt(8) % (1 << 64)).to_bytes(8, "little")
        elif kind == 3:
            del data[fdp.ConsumeIntInRange(0, len(data)) :]
        else:
            data[at : at + 16] = fdp.ConsumeBytes(16)
    with open(SCRATCH, "wb") as f:
        f.write(data)
    for opener in (mp.ReadOnlyPager.open, lambda path: mp.Pager.open(path, sync=False)):
        try:
            with opener(SCRATCH) as reader:
                for pid in list(reader.iter_allocated_pages())[:100]:
                    bytes(reader.get_page(pid)[:4])
                for ppid in reader.iter_allocated_protected_pages():
                    bytes(reader.get_protected_page(ppid)[:4])
                if isinstance(reader, mp.Pager):
                    reader.free(reader.alloc())
                    reader.free_protected(reader.alloc_protected())
        except (mp.MappedPageError, OSError):
            pass
    check_file(SCRATCH, mp.crc32c)


if __name__ == "__main__":
    assert mp.core == "c", "the fuzz target is for the C core"
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
