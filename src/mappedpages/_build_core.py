"""cffi build script for the C core (API mode, out of line): ``mappedpages._mappedpages_c``.

setup.py names this file in ``cffi_modules``; the declarations come from csrc/mappedpages.h,
the one header that defines the boundary between C and Python.
"""

from __future__ import annotations

import os
import re
import sys

from cffi import FFI

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSRC = os.path.join(_ROOT, "csrc")
SOURCES = [
    "crc32c.c",
    "bitmap.c",
    "record.c",
    "tree.c",
    "log.c",
    "alloc.c",
    "directory.c",
    "pending.c",
    "checkpoint.c",
    "shrink.c",
    "commit.c",
    "open.c",
    "snapshot.c",
]


def cdef_text() -> str:
    """The part of csrc/mappedpages.h between the CDEF markers."""
    with open(os.path.join(CSRC, "mappedpages.h"), encoding="utf-8") as f:
        text = f.read()
    match = re.search(r"/\* CDEF BEGIN \*/(.*)/\* CDEF END \*/", text, re.S)
    if match is None:
        raise RuntimeError("csrc/mappedpages.h has no CDEF section")
    return re.sub(r"/\*.*?\*/", "", match.group(1), flags=re.S)


def compile_args() -> list[str]:
    if sys.platform == "win32":
        return []
    return ["-std=c11", "-O2", "-Wall", "-Wextra", "-D_GNU_SOURCE"]


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "mappedpages._mappedpages_c",
    '#include "mappedpages.h"',
    sources=[os.path.relpath(os.path.join(CSRC, s), _ROOT) for s in SOURCES],
    include_dirs=[os.path.relpath(CSRC, _ROOT)],
    extra_compile_args=compile_args(),
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
