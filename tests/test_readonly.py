"""ReadOnlyPager, on both cores."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

import mappedpages as mp


def _fill(path: str) -> tuple[list[mp.PageId], list[mp.ProtectedPageId]]:
    with mp.Pager.create(path, 1024) as p:
        ids = p.alloc_bulk(20)
        for pid in ids:
            p.get_page_mut(pid)[:4] = int(pid).to_bytes(4, "little")
        prot = p.alloc_protected_bulk(3)
        with prot[1].get_mut(p) as w:
            w.page_mut()[:5] = b"prot1"
        p.free(ids.pop(4))
    return ids, prot


def test_reads_what_the_writer_committed(core: str, path: str) -> None:
    ids, prot = _fill(path)
    with mp.ReadOnlyPager.open(path) as ro:
        assert ro.page_size == 1024
        assert list(ro.iter_allocated_pages()) == ids
        assert list(ro.iter_allocated_protected_pages()) == prot
        for pid in ids:
            assert bytes(pid.get(ro)[:4]) == int(pid).to_bytes(4, "little")
        assert bytes(prot[1].get(ro)[:5]) == b"prot1"
        assert bytes(ro.get_protected_page(prot[0])) == bytes(1024)
        with mp.Pager.open(path) as p:
            assert (ro.page_count, ro.free_page_count) == (p.page_count, p.free_page_count)


def test_views_are_read_only_and_there_is_no_mutation(core: str, path: str) -> None:
    ids, prot = _fill(path)
    with mp.ReadOnlyPager.open(path) as ro:
        view = ro.get_page(ids[0])
        with pytest.raises(TypeError):
            view[0] = 1
        with pytest.raises(TypeError):
            ro.get_protected_page(prot[0])[0:1] = b"x"
        for name in (
            "alloc",
            "free",
            "alloc_bulk",
            "free_bulk",
            "get_page_mut",
            "batch",
            "alloc_protected",
            "free_protected",
            "flush",
            "protected_writer",
        ):
            assert not hasattr(ro, name), name
        with pytest.raises(AttributeError):
            ids[0].get_mut(ro)  # type: ignore[arg-type]


def test_works_while_a_writer_holds_the_file(core: str, path: str) -> None:
    ids, _ = _fill(path)
    with mp.Pager.open(path) as writer:
        with mp.ReadOnlyPager.open(path) as ro1, mp.ReadOnlyPager.open(path) as ro2:
            new = writer.alloc()
            writer.get_page_mut(ids[0])[:4] = b"live"
            # the reader keeps the allocation state it opened with; page bytes are live
            assert list(ro1.iter_allocated_pages()) == ids
            assert bytes(ro1.get_page(ids[0])[:4]) == b"live"
            assert list(ro2.iter_allocated_pages()) == ids
        with mp.ReadOnlyPager.open(path) as ro3:  # a new reader sees the new commit
            assert new in list(ro3.iter_allocated_pages())
        with pytest.raises(mp.FileLocked):
            mp.Pager.open(path)


def test_reader_in_another_process_while_writing(core: str, path: str) -> None:
    ids, _ = _fill(path)
    code = f"""
        import mappedpages as mp
        with mp.ReadOnlyPager.open({path!r}) as ro:
            print(len(list(ro.iter_allocated_pages())))
    """
    with mp.Pager.open(path) as writer:
        writer.alloc_bulk(5)
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, MAPPEDPAGES_CORE=core),
        )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(ids) + 5


def test_read_only_file(core: str, path: str) -> None:
    ids, _ = _fill(path)
    os.chmod(path, stat.S_IRUSR)
    try:
        with mp.ReadOnlyPager.open(path) as ro:
            assert list(ro.iter_allocated_pages()) == ids
    finally:
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def test_errors(core: str, path: str, tmp_path: object) -> None:
    ids, prot = _fill(path)
    with pytest.raises(mp.InvalidPageSize):
        mp.ReadOnlyPager.open(path, page_size=4096)
    with pytest.raises(FileNotFoundError):
        mp.ReadOnlyPager.open(path + ".missing")
    foreign = os.path.join(str(tmp_path), "foreign")
    with open(foreign, "wb") as f:
        f.write(b"x" * 5000)
    with pytest.raises(mp.CorruptSuperblock):
        mp.ReadOnlyPager.open(foreign)
    with pytest.raises(TypeError):
        mp.ReadOnlyPager(path)  # type: ignore[call-arg]
    ro = mp.ReadOnlyPager.open(path)
    with pytest.raises(mp.PageSizeMismatch):
        ro.get_page(mp.PageId(int(ids[0]), 4096))
    with pytest.raises(mp.OutOfBounds):
        ro.get_page(mp.PageId(10**6, 1024))
    with pytest.raises(mp.ReservedPage):
        ro.get_page(mp.PageId(1, 1024))
    view = ro.get_page(ids[0])
    ro.close()
    ro.close()
    assert bytes(view[:4]) == int(ids[0]).to_bytes(4, "little")  # views outlive close safely
    for call in (
        lambda: ro.get_page(ids[0]),
        lambda: ro.get_protected_page(prot[0]),
        lambda: ro.page_count,
        ro.iter_allocated_pages,
        ro.iter_allocated_protected_pages,
    ):
        with pytest.raises(mp.Unavailable):
            call()
    assert "closed" in repr(ro)
