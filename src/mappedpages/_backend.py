"""Choosing the core: the cffi C core where it is built, else the pure-Python core.

``MAPPEDPAGES_CORE=c`` or ``python`` in the environment before import forces one. Each Pager
binds to the core that is active when it is created or opened, so tests can run both cores in
one process with ``use()``.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from ._core_api import CoreModule

__all__ = ["CORE", "available", "use", "using"]

_MODULES = {"c": "mappedpages._core_c", "python": "mappedpages._core_py"}


def _load(name: str) -> CoreModule:
    return cast(CoreModule, importlib.import_module(_MODULES[name]))


def available() -> list[str]:
    """Names of the cores that import on this machine."""
    names = []
    for name in _MODULES:
        try:
            _load(name)
        except ImportError:
            continue
        names.append(name)
    return names


def _initial() -> CoreModule:
    choice = os.environ.get("MAPPEDPAGES_CORE", "").strip().lower()
    if choice in _MODULES:
        return _load(choice)  # an explicit choice that fails to import is an error, not a fallback
    if choice not in ("", "auto"):
        raise ImportError(f"MAPPEDPAGES_CORE={choice!r}: expected 'c' or 'python'")
    try:
        return _load("c")
    except ImportError as exc:
        warnings.warn(
            f"mappedpages: the C core is not available ({exc}); using the pure-Python core",
            RuntimeWarning,
            stacklevel=3,
        )
        return _load("python")


CORE: CoreModule = _initial()


def use(name: str) -> CoreModule:
    """Make ``name`` ("c" or "python") the core for pagers created or opened from now on."""
    global CORE
    if name not in _MODULES:
        raise ValueError(f"unknown core {name!r}; expected 'c' or 'python'")
    CORE = _load(name)
    return CORE


@contextmanager
def using(name: str) -> Iterator[CoreModule]:
    """Make ``name`` the core inside the block, and restore the previous one after it."""
    global CORE
    previous = CORE
    try:
        yield use(name)
    finally:
        CORE = previous
