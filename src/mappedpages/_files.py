"""Opening files: atomic creation (of new files and of backups) and the single-writer lock.

Creation writes the whole initial image to a temporary file in the target directory, syncs it,
locks it and only then links it under its name, so a crash during ``create`` never leaves a
half-written file behind the name, and no other writer can slip in between link and lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable

from .errors import FileLocked
from .format import Crc32c, initial_image, new_file_id

_TEMP_TRIES = 100  # names to try before giving up, as tempfile does


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


def _open_temp(directory: str, mode: int) -> tuple[int, str]:
    # Not tempfile.mkstemp: it creates with 0600 whatever the umask, and a later chmod would
    # need the umask (which cannot be read without changing it for every thread) and would
    # override the directory's default ACL. os.open lets the kernel apply both, as open() does.
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(_TEMP_TRIES):
        tmp = os.path.join(directory, f".mappedpages-{os.urandom(8).hex()}.tmp")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(17, "No usable temporary file name", directory)


def _name_the_path(exc: OSError, path: str) -> None:
    """Make ``exc`` name ``path``: the temporary file is ours, the user only knows the path."""
    if exc.errno is not None and not isinstance(exc, FileLocked):
        exc.filename = path
        exc.filename2 = None


# Pages that write(2) put in the page cache come in large folios (64 KiB and up on recent
# Linux), and the kernel dirties and writes back a folio whole: a commit's one-page msync of its
# record then wrote the whole folio around it. Dropped from the cache, the pages come back
# through the mapping one OS page each. The first 2 MiB hold page 0 and the records.
RECORDS_WINDOW = 2 << 20


def drop_cached(fd: int, length: int = 0) -> None:
    """Best effort: let the kernel drop the file's clean cached pages (the first ``length``
    bytes; 0: all of them), so that the mapping brings them back one OS page each."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, 0, length, os.POSIX_FADV_DONTNEED)


def publish(path: str, fill: Callable[[int], None], mode: int = 0o666, *, lock: bool) -> int:
    """Create ``path`` holding what ``fill(fd)`` writes, or nothing at all.

    ``fill`` writes into a temporary file of the same directory, which is then synced, locked
    (with ``lock``: so that no other writer slips in between link and lock) and linked under
    the name, which fails rather than replace a file. Returns the read-write fd. The file
    gets ``mode & ~umask``, as with ``open()``; every ``OSError`` names ``path``.
    """
    if os.path.lexists(path):
        raise FileExistsError(17, "File exists", path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = _open_temp(directory, mode)
    except OSError as exc:
        _name_the_path(exc, path)
        raise
    linked = False
    try:
        fill(fd)
        os.fsync(fd)
        drop_cached(fd)  # written with write(2): see drop_cached
        if lock:
            _lock(fd, path)
        os.link(tmp, path)  # fails with FileExistsError instead of replacing a file
        linked = True
        with contextlib.suppress(OSError):  # a leftover temporary name harms nothing
            os.unlink(tmp)
        _fsync_dir(directory)
    except BaseException as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if linked:  # the name is not durable: take it back rather than leave a doubtful file
            with contextlib.suppress(OSError):
                os.unlink(path)
        if isinstance(exc, OSError):
            _name_the_path(exc, path)
        raise
    return fd


def create_locked(path: str, page_size: int, crc32c: Crc32c, mode: int = 0o666) -> int:
    """Create ``path`` holding a fresh image; return a read-write fd holding the writer lock."""

    def fill(fd: int) -> None:
        view = memoryview(initial_image(page_size, crc32c, new_file_id()))
        while view:
            view = view[os.write(fd, view) :]

    return publish(path, fill, mode, lock=True)


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
