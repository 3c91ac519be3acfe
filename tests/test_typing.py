"""Handles are typed precisely enough that mypy --strict rejects a handle of the wrong kind.

Each snippet is a small user program. The lines marked ``# E: code`` must be exactly the
errors mypy reports (by line and error code), and the snippet of correct uses must pass.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from helpers import mypy_strict

# slow: runs mypy on the source tree, as tests/test_static.py does (the installed wheel's run
# leaves the slow tests out)
pytestmark = pytest.mark.slow

HEADER = """\
from __future__ import annotations

import mappedpages as mp


def use(
    pager: mp.Pager, ro: mp.ReadOnlyPager, snap: mp.Snapshot, sub: mp.SubPageAllocator
) -> None:
    pid = mp.PageId(3, 4096)
    ppid = mp.ProtectedPageId(0, 4096)
    sid = mp.SubPageId(pid, 0, 256)
    pids: list[mp.PageId] = [pid]
    ppids: list[mp.ProtectedPageId] = [ppid]
"""

# Every handle where its own kind belongs: no error at all.
RIGHT = """\
    pager.free(pid)
    pager.free_bulk(pids)
    pager.free_protected(ppid)
    pager.free_protected_bulk(ppids)
    pager.protected.free(ppid)
    pager.flush(pids)
    view: memoryview = pager.get_page(pid)
    view = pager.get_page_mut(pid)
    view = pager.get_protected_page(ppid)
    view = ro.get_page(pid)
    view = ro.get_protected_page(ppid)
    view = snap.get_page(pid)
    view = snap.get_protected_page(ppid)
    view = pid.get(ro)
    view = ppid.get(snap)
    view = pid.get_mut(pager)
    writer: mp.ProtectedPageWriter = ppid.get_mut(pager)
    writer.commit()
    sub.free(sid)
    view = sid.get_mut(sub)
    new_pid: mp.PageId = pager.alloc()
    new_ppid: mp.ProtectedPageId = pager.alloc_protected()
    new_sid: mp.SubPageId = sub.alloc()
    regular: list[mp.PageId] = pager.alloc_bulk(2)
    protected: list[mp.ProtectedPageId] = pager.protected.alloc_bulk(2)
    parent: mp.PageId = sid.parent
    number: int = int(ppid) + pid.index + ppid.page_size
    print(view, new_pid, new_ppid, new_sid, regular, protected, parent, number)
"""

# Each line hands over a handle of the wrong kind (or takes one back as the wrong kind).
WRONG = """\
    pager.free(ppid)  # E: arg-type
    pager.free_bulk(ppids)  # E: arg-type
    pager.free_protected(pid)  # E: arg-type
    pager.free_protected_bulk(pids)  # E: arg-type
    pager.protected.free(pid)  # E: arg-type
    pager.flush(ppids)  # E: arg-type
    pager.get_page(ppid)  # E: arg-type
    pager.get_page_mut(ppid)  # E: arg-type
    pager.get_protected_page(pid)  # E: arg-type
    ro.get_page(ppid)  # E: arg-type
    snap.get_protected_page(pid)  # E: arg-type
    sub.free(pid)  # E: arg-type
    sub.get(ppid)  # E: arg-type
    mp.SubPageId(ppid, 0, 256)  # E: arg-type
    pid.get_mut(ro)  # E: arg-type
    wrong: mp.PageId = mp.ProtectedPageId(1, 4096)  # E: assignment
    ids: list[mp.ProtectedPageId] = pager.alloc_bulk(2)  # E: assignment
    view: memoryview = ppid.get_mut(pager)  # E: assignment
    mp.Pager("data.mp")  # E: call-arg
    print(wrong, ids, view)
"""


def _expected(source: str) -> list[tuple[int, str]]:
    return [
        (number, match.group(1))
        for number, line in enumerate(source.splitlines(), 1)
        if (match := re.search(r"# E: ([\w-]+)$", line))
    ]


def test_wrong_handle_kinds_are_type_errors(tmp_path: Path) -> None:
    right = tmp_path / "right.py"
    wrong = tmp_path / "wrong.py"
    right.write_text(HEADER + RIGHT, encoding="utf-8")
    wrong.write_text(HEADER + WRONG, encoding="utf-8")
    found = mypy_strict([right, wrong])
    assert found[right.resolve()] == [], textwrap.indent(HEADER + RIGHT, "  ")
    expected = _expected(HEADER + WRONG)
    assert len(expected) == WRONG.count("# E:")
    assert sorted(found[wrong.resolve()]) == expected
