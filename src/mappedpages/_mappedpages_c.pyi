# The compiled cffi module built from csrc/ by _build_core.py; see csrc/mappedpages.h.
from typing import Any

ffi: Any
lib: Any
