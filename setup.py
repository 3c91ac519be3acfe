"""Build glue: setuptools metadata lives in pyproject.toml; this adds the cffi C core."""

from setuptools import setup

setup(cffi_modules=["src/mappedpages/_build_core.py:ffibuilder"])
