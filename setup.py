"""Build glue: setuptools metadata lives in pyproject.toml; this adds the cffi C core."""

import os

from setuptools import setup

_BUILDER = "src/mappedpages/_build_core.py"
setup(cffi_modules=[f"{_BUILDER}:ffibuilder"] if os.path.exists(_BUILDER) else [])
