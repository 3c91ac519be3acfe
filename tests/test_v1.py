"""Files of format 1 (written by mappedpages 0.1, kept in tests/data) keep opening.

``ReadOnlyPager`` and ``check`` read them as they are; ``Pager.open`` upgrades them to format 2
in one atomic commit (docs/FORMAT.md, "Version 1 files"): until the upgrade pointer lands in
page 0 the file is the format-1 file it was, after it the same state in format 2.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import pytest

import mappedpages as mp
from helpers import check_ok, count
from mappedpages import _backend
from mappedpages import format as fmt
from mappedpages.checker import check_file

DATA = Path(__file__).resolve().parent / "data"
EXPECTED = json.loads((DATA / "v1-expected.json").read_text())
NAMES = sorted(EXPECTED)


def _unpack(name: str, where: Path) -> str:
    path = where / name
    with gzip.open(DATA / f"{name}.gz", "rb") as src:
        path.write_bytes(src.read())
    return str(path)


def _same_as_format_1_saw(reader: mp.ReadOnlyPager | mp.Pager, name: str) -> None:
    want = EXPECTED[name]
    assert reader.page_size == want["page_size"]
    assert [int(x) for x in reader.iter_allocated_pages()] == want["pages"]
    for page, head in want["page_heads"].items():
        assert bytes(reader.get_page(mp.PageId(int(page), reader.page_size))[:8]).hex() == head
    protected = {str(int(x)): x for x in reader.iter_allocated_protected_pages()}
    assert sorted(protected) == sorted(want["protected"])
    for slot, head in want["protected"].items():
        assert bytes(reader.get_protected_page(protected[slot])[:16]).hex() == head


@pytest.mark.parametrize("name", NAMES)
def test_a_format_1_file_reads_as_it_is(core: str, tmp_path: Path, name: str) -> None:
    path = _unpack(name, tmp_path)
    before = Path(path).read_bytes()
    with mp.ReadOnlyPager.open(path) as ro:
        _same_as_format_1_saw(ro, name)
        assert ro.page_count == EXPECTED[name]["page_count"]
        assert ro.free_page_count == EXPECTED[name]["free_page_count"]
        assert ro.refresh() is False
    report = check_file(path, mp.crc32c)
    assert report.ok and report.format_version == 1 and "format 1" in report.notes[0]
    assert Path(path).read_bytes() == before  # reading changes nothing


@pytest.mark.parametrize("name", NAMES)
def test_pager_open_upgrades_in_one_commit(core: str, tmp_path: Path, name: str) -> None:
    path = _unpack(name, tmp_path)
    with mp.Pager.open(path) as p:
        _same_as_format_1_saw(p, name)
        assert p.page_count == EXPECTED[name]["page_count"]
        gen = p.generation
    report = check_ok(path)
    assert report.format_version == 2 and report.upgraded and report.generation == gen
    with mp.ReadOnlyPager.open(path) as ro:
        _same_as_format_1_saw(ro, name)
    with mp.Pager.open(path) as p:  # and it is an ordinary format-2 file from then on
        assert p.generation == gen
        _same_as_format_1_saw(p, name)
        new = p.alloc_bulk(50)
        prot = next(iter(p.iter_allocated_protected_pages()))
        with prot.get_mut(p) as w:
            w.page_mut()[:6] = b"after!"
        p.free_bulk(new[::2])
    check_ok(path)
    with mp.Pager.open(path) as p:
        assert bytes(p.get_protected_page(prot)[:6]) == b"after!"
        assert set(new[1::2]) <= set(p.iter_allocated_pages())
        for page in (1, 2):  # format 1's metadata pages stay reserved
            with pytest.raises(mp.ReservedPage):
                p.free(mp.PageId(page, p.page_size))


@pytest.mark.parametrize("name", NAMES)
def test_every_crash_image_of_the_upgrade_opens_old_or_new(tmp_path: Path, name: str) -> None:
    """The upgrade writes pages format 1 does not use, makes them durable, then writes the
    pointer sector of page 0: a crash before that sector landed leaves format 1, after it
    format 2; a torn pointer sector is format 1."""
    path = _unpack(name, tmp_path)
    old = Path(path).read_bytes()
    with mp.Pager.open(path):
        pass
    new = Path(path).read_bytes()
    ps = EXPECTED[name]["page_size"]
    changed = [
        i
        for i in range(1, len(new) // ps)
        if old[i * ps : (i + 1) * ps] != new[i * ps : (i + 1) * ps]
    ]
    assert changed and old[:512] == new[:512]  # the identity is never rewritten
    rng = random.Random(4)
    probe = tmp_path / "probe.mp"
    images = 0
    for trial in range(40):
        img = bytearray(old.ljust(len(new), b"\0"))
        landed = rng.sample(changed, rng.randrange(len(changed) + 1))
        for i in landed:
            img[i * ps : (i + 1) * ps] = new[i * ps : (i + 1) * ps]
        pointer = trial % 4 == 0  # all the rest landed, and then maybe the pointer sector
        if pointer:
            for i in changed:
                img[i * ps : (i + 1) * ps] = new[i * ps : (i + 1) * ps]
            img[:ps] = new[:ps]
        elif trial % 4 == 1:  # the pointer sector torn: garbage where it goes
            sector = next(s for s in fmt.UPGRADE_SECTORS if old[s : s + 512] != new[s : s + 512])
            img[sector : sector + 512] = rng.randbytes(512)
        probe.write_bytes(bytes(img))
        report = check_file(str(probe), mp.crc32c)
        assert report.ok, report.problems
        assert report.format_version == (2 if pointer else 1)
        with mp.ReadOnlyPager.open(str(probe)) as ro:
            _same_as_format_1_saw(ro, name)
        images += 1
    count("format-1 upgrade crash images", images)


@pytest.mark.parametrize("name", NAMES)
def test_both_cores_upgrade_to_the_same_bytes(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fmt, "new_file_id", lambda: b"U" * 16)
    images = {}
    for core in ("c", "python"):
        path = _unpack(name, tmp_path / core if (tmp_path / core).mkdir() is None else tmp_path)
        with _backend.using(core), mp.Pager.open(path):
            pass
        images[core] = Path(path).read_bytes()
    assert images["c"] == images["python"]
    os.unlink(path)
