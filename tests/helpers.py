"""Helpers shared by the tests."""

from __future__ import annotations

import mappedpages as mp
from mappedpages.checker import Report, check_file


def check_ok(path: str) -> Report:
    """Assert that the independent checker finds the file sound, and return its report."""
    report = check_file(path, mp.crc32c)
    assert report.ok, report.problems
    return report
