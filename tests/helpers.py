"""Helpers shared by the tests."""

from __future__ import annotations

import mappedpages as mp
from mappedpages.checker import Report, check_file

State = tuple[list[int], list[tuple[int, int]]]


def pager_state(p: mp.Pager) -> State:
    """Regular pages in use, and each protected page with a checksum of its content."""
    regular = [int(x) for x in p.iter_allocated_pages()]
    protected = [
        (int(x), mp.crc32c(p.get_protected_page(x))) for x in p.iter_allocated_protected_pages()
    ]
    return regular, protected


def check_ok(path: str) -> Report:
    """Assert that the independent checker finds the file sound, and return its report."""
    report = check_file(path, mp.crc32c)
    assert report.ok, report.problems
    return report


# What the proofs counted in this run (crash images, SIGKILLs, hostile inputs); conftest.py
# prints it at the end of the session, so every CI log states it.
COUNTS: dict[str, int] = {}


def count(what: str, n: int = 1) -> None:
    COUNTS[what] = COUNTS.get(what, 0) + n
