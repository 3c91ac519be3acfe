"""Opening files: atomic creation and the single-writer lock.

Creation writes the whole initial image to a temporary file in the target directory, syncs it,
locks it and only then links it under its name, so a crash during ``create`` never leaves a
half-written file behind the name, and no other writer can slip in between link and lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile

from .errors import FileLocked
from .format import Crc32c, initial_image, new_file_id


def _lock(fd: int, path: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FileLocked(f"{path}: another Pager holds this file open for writing") from None


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_locked(path: str, page_size: int, crc32c: Crc32c) -> int:
    """Create ``path`` holding a fresh image; return a read-write fd holding the writer lock."""
    if os.path.lexists(path):
        raise FileExistsError(17, "File exists", path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".mappedpages-", suffix=".tmp", dir=directory)
    try:
        image = initial_image(page_size, crc32c, new_file_id())
        view = memoryview(image)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        _lock(fd, path)
        os.link(tmp, path)  # fails with FileExistsError instead of replacing a file
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    _fsync_dir(directory)
    return fd


def open_locked(path: str) -> int:
    """Open ``path`` read-write and take the writer lock (``FileLocked`` if another has it)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        _lock(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_shared(path: str) -> int:
    """Open ``path`` read-only without any lock (readers never block the writer)."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
