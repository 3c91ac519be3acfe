"""Damage: every byte of every internal page of a small file, flipped one at a time.

Each image must open to the state of a commit that really happened (the newest, or one
before it) or raise a MappedPageError, and the checker must say what happened:

- a flip in a copy the newest commit's state relies on (page 0's identity, a tree block or a
  protected page's content that commit did not write in its own barrier) is damage:
  ``check`` fails;
- a flip in what the newest commit wrote in its one barrier (its record, the pages it lists)
  cannot be told from a commit cut short by power loss (docs/DESIGN.md, "Damage"): ``check``
  notes it, and the file opens to the commit before;
- a flip anywhere else (the older record, bytes no checksum covers and no reader reads) leaves
  the newest state, and ``check`` passes (page 0's unused bytes excepted: they must be zero).

``MAPPEDPAGES_DAMAGE_STRIDE`` flips every n-th byte of the pages' plain data (bitmaps,
content); the default (1) flips every byte with 1 KiB pages and every 7th byte of 4 KiB
pages' plain data, headers and entries always whole.
"""

from __future__ import annotations

import os
import warnings

import pytest

import mappedpages as mp
from helpers import count, pager_state
from mappedpages import format as fmt
from mappedpages.checker import check_file

# slow: a proof, run in full by the first run of .ci/run (the installed wheel's run
# leaves the slow tests out)
pytestmark = pytest.mark.slow

STRIDE = os.environ.get("MAPPEDPAGES_DAMAGE_STRIDE")


def _history(path: str, ps: int) -> dict[int, object]:
    """Make a small file through a few kinds of commit; the state after each, by generation."""
    states: dict[int, object] = {}
    with mp.Pager.create(path, ps) as p:
        states[p.generation] = pager_state(p)

        def note() -> None:
            states[p.generation] = pager_state(p)

        ids = p.alloc_bulk(12)
        note()
        prot = p.alloc_protected_bulk(3)
        note()
        for i, x in enumerate(prot):
            with x.get_mut(p) as w:
                w.page_mut()[: 8 + i] = b"content!"[:8] + bytes(i)
            note()
        p.free_bulk(ids[::4])
        note()
        p._core.checkpoint_now()  # the trees as blocks: a leaf of each, and their nodes
        note()
        with prot[0].get_mut(p) as w:  # and a log-only commit on top (one barrier)
            w.page_mut()[:4] = b"last"
        note()
        p.alloc()
        note()
    return states


def _regions(path: str, ps: int) -> tuple[list[int], dict[int, str]]:
    """The internal pages, and what each is: "record", "identity", or "block"/"content"."""
    kinds: dict[int, str] = {0: "identity", 1: "record", 2: "record"}
    with mp.Pager.open(path) as p:
        for i in range(3, p.page_count):
            if p._core.kind(i) == 2:
                kinds[i] = "block"
        for x in p.iter_allocated_protected_pages():
            kinds[p._core.ppage(int(x))] = "content"
    return sorted(kinds), kinds


def _offsets(kind: str, ps: int, stride: int) -> list[int]:
    """The bytes of a page to flip: every one of headers and entries, every stride-th else."""
    block = min(ps, fmt.MAX_BLOCK)
    if kind == "content":
        return list(range(0, ps, stride))
    dense = range(0, fmt.LOG_OFFSET + 64 if kind == "record" else 64)
    return sorted(set(dense) | set(range(0, block, stride)) | set(range(block, ps, 64)))


@pytest.mark.parametrize("ps", [1024, 4096])
def test_every_byte_of_every_internal_page(core: str, tmp_path: object, ps: int) -> None:
    path = os.path.join(str(tmp_path), "damage.mp")
    states = _history(path, ps)
    newest = max(states)
    with open(path, "rb") as f:
        pristine = f.read()
    report = check_file(path, mp.crc32c)
    assert report.ok and report.generation == newest
    slot = report.record
    rec = fmt.Record(*fmt.RECORD.unpack_from(pristine, (1 + slot) * ps))
    listed = {
        fmt.LISTED.unpack_from(pristine, (1 + slot) * ps + fmt.LISTED_OFFSET + 16 * i)[0]
        for i in range(rec.listed)
    }
    covered_record = fmt.LISTED_OFFSET + 16 * rec.listed  # and the log, [256, 256 + log_len)
    pages, kinds = _regions(path, ps)
    stride = int(STRIDE) if STRIDE else (1 if ps == 1024 else 7)
    probe = os.path.join(str(tmp_path), "probe.mp")
    flips = damaged = ambiguous = harmless = errors = 0
    for page in pages:
        kind = kinds[page]
        for off in _offsets(kind, ps, stride):
            image = bytearray(pristine)
            image[page * ps + off] ^= 0x5A
            with open(probe, "wb") as f:
                f.write(image)
            flips += 1
            # what the flip hit: a copy the newest state relies on, what the newest commit
            # wrote in its barrier, or nothing anything reads
            if kind == "identity":
                expect = "damage"
            elif kind == "record":
                newest_record = page == 1 + slot
                in_log = fmt.LOG_OFFSET <= off < fmt.LOG_OFFSET + rec.log_len
                if not (off < covered_record or in_log):
                    expect = "harmless"
                else:
                    expect = "ambiguous" if newest_record else "harmless"
            elif off >= min(ps, fmt.MAX_BLOCK) and kind == "block":
                expect = "harmless"  # past the block, in the unused rest of its page
            else:
                expect = "ambiguous" if page in listed else "damage"
            r = check_file(probe, mp.crc32c)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", mp.RecoveryWarning)
                try:
                    with mp.Pager.open(probe, sync=False) as p:
                        gen, state = p.generation, pager_state(p)
                except mp.MappedPageError:
                    gen, state = -1, None
            if gen < 0:
                errors += 1
            else:  # the state of a commit that really happened, whole
                assert state == states[gen], (page, off, kind, gen)
            where = (page, off, kind, r.problems[:2], r.notes[:2])
            if expect == "damage":
                damaged += 1
                assert not r.ok, where
            elif expect == "ambiguous":
                ambiguous += 1
                assert r.ok and r.notes, where
                assert gen in (newest - 1, -1), where
            else:
                harmless += 1
                assert r.ok and gen == newest, where
            os.unlink(probe)
    count("damage: bytes flipped in internal pages", flips)
    count("damage: flips check reports as damage", damaged)
    count("damage: flips indistinguishable from a cut-short commit (noted)", ambiguous)
    assert damaged and ambiguous and harmless and errors
