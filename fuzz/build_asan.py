"""Build the C core with AddressSanitizer + UndefinedBehaviorSanitizer into a directory.

    python fuzz/build_asan.py OUTDIR

The fuzz target loads the module from there in place of the normal build. Python itself is
not built with ASan, so the runtime must come first: run with
``LD_PRELOAD=$(cc -print-file-name=libasan.so)`` (fuzz/run.sh does all of it).
"""

from __future__ import annotations

import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "src", "mappedpages"))

import _build_core  # noqa: E402  (the project's cffi build script, for its sources and cdef)

SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


def build(outdir: str) -> str:
    ffi = FFI()
    ffi.cdef(_build_core.cdef_text())
    ffi.set_source(
        "_mappedpages_c",
        '#include "mappedpages.h"',
        sources=[os.path.join(_build_core.CSRC, s) for s in _build_core.SOURCES],
        include_dirs=[_build_core.CSRC],
        extra_compile_args=["-std=c11", "-O1", "-g", "-D_GNU_SOURCE", *SANITIZE],
        extra_link_args=SANITIZE,
        libraries=["pthread"],
    )
    return str(ffi.compile(tmpdir=outdir))


if __name__ == "__main__":
    print(build(sys.argv[1]))
