"""msync(MS_SYNC) of part of a mapping with the GIL released.

``mmap.flush`` holds the GIL for the whole sync (CPython's mmap module calls msync without
releasing it), so one thread's commit would stop every other thread for a disk flush. A
ctypes call releases the GIL, as the C core's cffi calls do. Where libc's msync cannot be
found, ``mmap.flush`` it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from typing import Any

_msync: Any
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _msync = _libc.msync
    _msync.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    _msync.restype = ctypes.c_int
except (OSError, AttributeError):  # no libc to call: the GIL is held through the sync
    _msync = None

_MS_SYNC = getattr(mmap, "MS_SYNC", 4)


def msync(mm: mmap.mmap, offset: int, length: int) -> None:
    """Make ``[offset, offset + length)`` of ``mm`` durable (``offset`` page-aligned)."""
    if _msync is None or length <= 0:
        mm.flush(offset, length)
        return
    # the address only: the buffer export ends with the temporary, before the sync
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    if _msync(base + offset, length, _MS_SYNC) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"msync: {os.strerror(err)}")
