"""ReadOnlyPager, on both cores."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

import mappedpages as mp
from mappedpages.checker import check_file


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
        with pytest.raises(TypeError):  # a reader has no writable views
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


def test_refresh_takes_up_what_was_committed_since(core: str, path: str) -> None:
    ids, prot = _fill(path)
    with mp.Pager.open(path) as writer, mp.ReadOnlyPager.open(path) as ro:
        assert ro.refresh() is False  # nothing committed since it opened
        before = ro.get_page(ids[1])
        it = ro.iter_allocated_pages()
        assert next(it) == ids[0]
        grown = writer.alloc_bulk(writer.free_page_count + 50)  # the file grows
        writer.free(ids[0])
        with prot[1].get_mut(writer) as w:
            w.page_mut()[:5] = b"newer"
        (extra,) = writer.alloc_protected_bulk(1)
        assert ro.page_count < writer.page_count
        assert bytes(prot[1].get(ro)[:5]) == b"prot1"  # the directory it opened with
        assert ro.refresh() is True
        assert (ro.page_count, ro.free_page_count) == (writer.page_count, writer.free_page_count)
        assert list(ro.iter_allocated_pages()) == list(writer.iter_allocated_pages())
        assert grown[-1] in list(ro.iter_allocated_pages())
        assert list(ro.iter_allocated_protected_pages()) == [*prot, extra]
        assert bytes(prot[1].get(ro)[:5]) == b"newer"
        assert bytes(ro.get_page(grown[-1])) == bytes(1024)
        assert bytes(before[:4]) == int(ids[1]).to_bytes(4, "little")  # old views still read
        with pytest.raises(RuntimeError):
            next(it)
        assert ro.refresh() is False
    ro.close()
    with pytest.raises(mp.Unavailable):
        ro.refresh()


class _Writer(threading.Thread):
    """Commits as fast as it can: protected writes (``w%05d``), bulk calls, growth."""

    def __init__(self, path: str, prot: list[mp.ProtectedPageId], commits: int = 400) -> None:
        super().__init__()
        self.path, self.prot, self.commits = path, prot, commits
        self.done = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            with mp.Pager.open(self.path, sync=False) as w:
                for i in range(self.commits):
                    with self.prot[i % 3].get_mut(w) as pw:
                        pw.page_mut()[:6] = b"w%05d" % i
                    if i % 7 == 0:
                        w.free_bulk(w.alloc_bulk(i % 40 + 1))
                    if i % 50 == 0:
                        w.alloc_bulk(200)  # growth
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.done.set()


def test_refresh_while_a_writer_commits(core: str, path: str) -> None:
    """A reader refreshing in a loop while another thread commits never fails to open a state:
    a load during which a commit landed is done again."""
    _, prot = _fill(path)
    writer = _Writer(path, prot)
    with mp.ReadOnlyPager.open(path) as ro:
        writer.start()
        counts = [ro.page_count]
        refreshed = 0
        while not writer.done.is_set() or refreshed == 0:
            refreshed += ro.refresh()
            counts.append(ro.page_count)
            assert len(list(ro.iter_allocated_protected_pages())) == 3
        writer.join()
        assert not writer.errors, writer.errors
        ro.refresh()
        with mp.Pager.open(path) as w:
            assert list(ro.iter_allocated_pages()) == list(w.iter_allocated_pages())
        assert counts == sorted(counts) and refreshed > 0
        assert bytes(prot[399 % 3].get(ro)[:6]) == b"w00399"


def test_check_while_a_writer_commits(core: str, path: str) -> None:
    _, prot = _fill(path)
    writer = _Writer(path, prot, commits=150)
    writer.start()
    checks = 0
    while not writer.done.is_set() or checks == 0:
        report = check_file(path, mp.crc32c)
        assert report.ok, report.problems
        checks += 1
    writer.join()
    assert not writer.errors, writer.errors


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
