"""Build glue: metadata lives in pyproject.toml; this adds the cffi C core, and next to it
``mappedpages._crc32c``, a small CPython module that calls the same CRC32C without cffi's
per-call cost, and ``mappedpages._views``, page handles and ``get_page`` in C.

Without a working C compiler the build does not fail: it warns and installs the package
without the C core, and ``import mappedpages`` then uses the pure-Python core (with a warning).
The modules use only the stable ABI, so one wheel serves every later CPython too. The CRC
module takes buffers directly where the stable ABI has the buffer protocol (3.11): built by
3.11 or later it targets 3.11 (a cp311-abi3 wheel), built by 3.10 it targets 3.10.
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


_LIMITED = (3, 11) if sys.version_info >= (3, 11) else (3, 10)


def _module(name, sources):
    return Extension(
        f"mappedpages.{name}",
        sources,
        py_limited_api=True,
        define_macros=[("Py_LIMITED_API", "0x{:02X}{:02X}0000".format(*_LIMITED))],
        extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-D_GNU_SOURCE"],
    )


_MODULES = [
    _module("_crc32c", ["csrc/python/crc32c_module.c", "csrc/crc32c.c"]),
    _module("_views", ["csrc/python/views_module.c"]),
]

setup(
    cffi_modules=[f"{_BUILDER}:ffibuilder"] if os.path.exists(_BUILDER) else [],
    ext_modules=_MODULES if os.path.exists(_BUILDER) else [],
    cmdclass={"build_ext": OptionalBuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp{}{}".format(*_LIMITED)}},
)
