"""Build glue: metadata lives in pyproject.toml; this adds the cffi C core, and next to it
``mappedpages._crc32c``, a small CPython module that calls the same CRC32C without cffi's
per-call cost.

Without a working C compiler the build does not fail: it warns and installs the package
without the C core, and ``import mappedpages`` then uses the pure-Python core (with a warning).
The extension uses only the stable ABI, so one wheel serves every CPython >= 3.9.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_BUILDER = "src/mappedpages/_build_core.py"


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed C build into a warning and a pure-Python install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, ...
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        bar = "*" * 75
        sys.stderr.write(
            f"\n{bar}\nWARNING: the mappedpages C core could not be built ({exc}).\n"
            "Installing without it: mappedpages will use its pure-Python core, which is\n"
            "correct but much slower. Install a C compiler and reinstall for the C core.\n"
            f"{bar}\n\n"
        )


_CRC_MODULE = Extension(
    "mappedpages._crc32c",
    ["csrc/python/crc32c_module.c", "csrc/crc32c.c"],
    py_limited_api=True,
    extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-D_GNU_SOURCE"],
)

setup(
    cffi_modules=[f"{_BUILDER}:ffibuilder"] if os.path.exists(_BUILDER) else [],
    ext_modules=[_CRC_MODULE] if os.path.exists(_BUILDER) else [],
    cmdclass={"build_ext": OptionalBuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
