"""The reader table beside a data file (``<file>-readers``): where snapshots of other processes
register the generation they read, so that the writer keeps that state whole without ever
waiting for them. docs/FORMAT.md ("The reader table") gives the bytes and docs/DESIGN.md
("Snapshots") the reasoning; this module holds the rules, for both cores:

- a slot is owned by whoever holds the OFD write lock on its first byte; the kernel drops it
  when the process dies, so liveness is the lock's (pid and start time only name the process);
- registration: store the newest generation, fence, read the newest record again and take that
  (``register``); a refresh stores its new generation only after it has read the new record;
- a slot's generation and the header's hwm are stored and loaded whole, one aligned machine
  access each (``_Words``): ``struct.pack_into`` clears a field and then writes it a byte at a
  time, and a writer reading the slot meanwhile would see 0 ("no snapshot") or a mix of two
  generations, and reuse pages the snapshot reads;
- the writer fences after its last record write, then reads the slots (``WriterView``; the C
  core does the same in csrc/pending.c), ignores slots whose lock is gone, and checks the lock
  of the slot that holds reclamation back at most every ``RECHECK`` seconds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import struct
import sys
import time
from typing import Any, NamedTuple

from . import format as fmt
from .errors import Unavailable

RECHECK = 0.1  # seconds between checks of the lock of the slot holding the horizon back

_FLOCK = struct.Struct("=hh4xqqi4x")  # struct flock on Linux (x86-64, arm64)
_HAS_OFD = hasattr(fcntl, "F_OFD_SETLK")
_LITTLE = sys.byteorder == "little"


class _Words:
    """Whole-value loads and stores of the table's 8-byte and 4-byte fields, each a single
    aligned machine access: a memoryview cast to ``Q`` or ``I`` copies the value with one
    fixed-size ``memcpy``, which compilers emit as one load or store (single-copy atomic on
    x86-64 and arm64 when aligned, as every field here is). The table is little-endian."""

    def __init__(self, mm: mmap.mmap) -> None:
        view = memoryview(mm)
        self.q = view.cast("Q")
        self.i = view.cast("I")
        view.release()

    def load64(self, offset: int) -> int:
        v = int(self.q[offset >> 3])
        return v if _LITTLE else int.from_bytes(v.to_bytes(8, "big"), "little")

    def store64(self, offset: int, value: int) -> None:
        self.q[offset >> 3] = (
            value if _LITTLE else int.from_bytes(value.to_bytes(8, "little"), "big")
        )

    def load32(self, offset: int) -> int:
        v = int(self.i[offset >> 2])
        return v if _LITTLE else int.from_bytes(v.to_bytes(4, "big"), "little")

    def store32(self, offset: int, value: int) -> None:
        self.i[offset >> 2] = (
            value if _LITTLE else int.from_bytes(value.to_bytes(4, "little"), "big")
        )

    def release(self) -> None:
        self.q.release()
        self.i.release()


class ReaderInfo(NamedTuple):
    """A live snapshot of a file: the process, the generation it reads, since when."""

    pid: int
    generation: int
    since: float  # time.time() when the snapshot was taken or last refreshed


ReaderInfo.pid.__doc__ = "The process that holds the snapshot."
ReaderInfo.generation.__doc__ = "The generation of the commit the snapshot reads."
ReaderInfo.since.__doc__ = "When it was taken or last refreshed, as ``time.time()`` gives."


def table_path(data_path: str) -> str:
    return os.path.realpath(data_path) + fmt.TABLE_SUFFIX


def _lock(fd: int, cmd: int, kind: int, offset: int) -> bytes:
    return fcntl.fcntl(fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, offset, 1, 0))


def _try_lock(fd: int, offset: int) -> bool:
    try:
        _lock(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK, offset)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _unlock(fd: int, offset: int) -> None:
    _lock(fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, offset)


def is_locked(fd: int, offset: int) -> bool:
    """Whether another open file description holds the lock at ``offset``."""
    raw = _lock(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, offset)
    return bool(_FLOCK.unpack(raw)[0] != fcntl.F_UNLCK)


def start_time(pid: int) -> int:
    """A process's start time in clock ticks after boot (0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


class ReaderTable:
    """One process's handle on a reader table: its descriptor and mapping."""

    def __init__(self, path: str, fd: int, mm: mmap.mmap, writable: bool) -> None:
        self.path = path
        self.fd = fd
        self.mm = mm
        self.words = _Words(mm)
        self.writable = writable

    @classmethod
    def open(
        cls, data_path: str, file_id: bytes, mode: int = 0o644, *, writer: bool = False
    ) -> ReaderTable | None:
        """The table of ``data_path``, created if missing; None when this process cannot
        write it (no permission, a read-only file system, for a reader no disk space for it)
        or has no OFD locks. The writer
        (``writer=True``) never waits for the header lock: a reader holding it is fixing
        the header itself."""
        if not _HAS_OFD:
            return None
        path = table_path(data_path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode & 0o666)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOENT):
                return None
            raise
        try:
            # written through its mapping: a hole of a sparse table on a full disk would be a
            # SIGBUS at the first store into it, so its space is reserved first
            os.posix_fallocate(fd, 0, fmt.TABLE_SIZE)
            mm = mmap.mmap(fd, fmt.TABLE_SIZE)
        except OSError as exc:
            os.close(fd)
            if not writer and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                return None  # a reader opens unregistered, as without write access
            raise
        except BaseException:
            os.close(fd)
            raise
        table = cls(path, fd, mm, True)
        if not table._header_ok(file_id):
            if not writer:
                table._with_header_lock(lambda: table._init(file_id))
            elif _try_lock(fd, 0):
                try:
                    table._init(file_id)
                finally:
                    _unlock(fd, 0)
        return table

    @classmethod
    def open_to_list(cls, data_path: str) -> ReaderTable | None:
        """The table opened read-only, to list its readers (None when there is none)."""
        path = table_path(data_path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size < fmt.TABLE_SIZE:
                os.close(fd)
                return None
            mm = mmap.mmap(fd, fmt.TABLE_SIZE, access=mmap.ACCESS_READ)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, mm, False)

    def close(self) -> None:
        self.words.release()
        with contextlib.suppress(BufferError):
            self.mm.close()
        os.close(self.fd)

    # -- the header -----------------------------------------------------------------------

    def header(self) -> fmt.TableHeader:
        return fmt.TableHeader(*fmt.TABLE_HEADER.unpack_from(self.mm, 0))

    def _header_ok(self, file_id: bytes) -> bool:
        h = self.header()
        return (
            h.magic == fmt.TABLE_MAGIC
            and h.version == fmt.TABLE_VERSION
            and h.slot_size == fmt.TABLE_SLOT_SIZE
            and h.capacity == fmt.TABLE_CAPACITY
            and h.hwm <= fmt.TABLE_CAPACITY
            and h.file_id == file_id
        )

    def _with_header_lock(self, fn: Any) -> Any:
        _lock(self.fd, fcntl.F_OFD_SETLKW, fcntl.F_WRLCK, 0)
        try:
            return fn()
        finally:
            _unlock(self.fd, 0)

    def _init(self, file_id: bytes) -> None:
        """Write a fresh header (under the header lock), unless another process just did.
        The slots stay: a live owner keeps its lock, so hwm covers the highest live slot."""
        if self._header_ok(file_id):
            return
        hwm = 0
        for i in range(fmt.TABLE_CAPACITY):
            if is_locked(self.fd, fmt.table_slot_offset(i)):
                hwm = i + 1
        raw = fmt.TABLE_HEADER.pack(
            fmt.TABLE_MAGIC,
            fmt.TABLE_VERSION,
            fmt.TABLE_SLOT_SIZE,
            fmt.TABLE_CAPACITY,
            hwm,
            file_id,
        )
        at = fmt.TABLE_HWM_OFFSET
        self.mm[:at] = raw[:at]  # a running writer reads hwm meanwhile: never let it pass 0
        self.words.store32(at, hwm)
        self.mm[at + 4 : len(raw)] = raw[at + 4 :]

    def hwm(self) -> int:
        return min(self.words.load32(fmt.TABLE_HWM_OFFSET), fmt.TABLE_CAPACITY)

    # -- a reader's slot ------------------------------------------------------------------

    def claim(self) -> int:
        """Take the lowest free slot for this process's snapshot; returns its number."""

        def take() -> int:
            for i in range(fmt.TABLE_CAPACITY):
                off = fmt.table_slot_offset(i)
                if _try_lock(self.fd, off):
                    pid = os.getpid()
                    self.words.store64(off, 0)  # a dead owner's generation goes first, whole
                    fmt.TABLE_SLOT.pack_into(self.mm, off, 0, pid, start_time(pid), time.time_ns())
                    if i >= self.hwm():
                        self.words.store32(fmt.TABLE_HWM_OFFSET, i + 1)
                    return i
            raise Unavailable(
                f"the reader table {self.path} is full: {fmt.TABLE_CAPACITY} snapshots are "
                "open on this file"
            )

        return int(self._with_header_lock(take))

    def set_generation(self, slot: int, generation: int) -> None:
        """Store the generation this slot's snapshot reads (and when it was taken)."""
        off = fmt.table_slot_offset(slot)
        self.words.store64(off + fmt.TABLE_SLOT_SINCE_OFFSET, time.time_ns())
        self.words.store64(off, generation)

    def release(self, slot: int) -> None:
        """The snapshot is gone: its generation first, then the slot's lock."""
        off = fmt.table_slot_offset(slot)
        self.words.store64(off, 0)
        with contextlib.suppress(OSError):
            _unlock(self.fd, off)

    # -- listing --------------------------------------------------------------------------

    def slot(self, i: int) -> fmt.TableSlot:
        return fmt.TableSlot(*_read_slot(self, i))

    def live(self) -> list[ReaderInfo]:
        out = []
        for i in range(self.hwm()):
            s = self.slot(i)
            if s.generation and is_locked(self.fd, fmt.table_slot_offset(i)):
                out.append(ReaderInfo(s.pid, s.generation, s.since / 1e9))
        return out


def register(table: ReaderTable, slot: int, module: Any, fd: int, page_size: int) -> Any:
    """Open a snapshot of the newest commit, registered in ``slot`` (docs/FORMAT.md, "The
    reader table"): either the writer sees the generation stored before the fence, or the
    record read after the fence is one the writer will not touch."""
    table.set_generation(slot, module.newest_generation(fd, page_size))
    module.fence()
    snap = module.open_snapshot(fd, page_size)
    table.set_generation(slot, snap.generation)
    return snap


def refresh(table: ReaderTable | None, slot: int, snap: Any) -> bool:
    """Move ``snap`` to the newest commit. Its slot still names the old generation, which no
    writer reclaims past, so the new state is whole; the slot moves on after."""
    if not snap.newer() or not snap.refresh():
        return False
    if table is not None:
        table.set_generation(slot, snap.generation)
    return True


class WriterView:
    """The writer's side of the table (the pure core's; csrc/pending.c is the C core's)."""

    def __init__(self, table: ReaderTable, fence: Any) -> None:
        self.table = table
        self.fence = fence
        # slots found unlocked: (slot, pid, start_time, since); a new snapshot in the slot
        # has another ``since``, so it is never mistaken for the dead one
        self.dead: set[tuple[int, int, int, int]] = set()
        self.checked: dict[int, float] = {}  # slot -> when its lock was last found held

    def horizon(self, committed: int) -> int:
        """The smallest generation a live snapshot reads, or ``committed``."""
        self.fence()
        table = self.table
        candidates = []
        for i in range(table.hwm()):
            slot = _read_slot(table, i)
            if 0 < slot[0] < committed and (i, *slot[1:]) not in self.dead:
                candidates.append((slot, i))
        now = time.monotonic()
        for slot, i in sorted(candidates):
            if now - self.checked.get(i, -1.0) < RECHECK:
                return slot[0]
            if is_locked(table.fd, fmt.table_slot_offset(i)):
                self.checked[i] = now
                return slot[0]
            if _read_slot(table, i) == slot:  # unchanged while unlocked: its owner is gone
                self.dead.add((i, *slot[1:]))
                self.checked.pop(i, None)
            else:  # it changed meanwhile: count it, and look again next time
                return min(slot[0], _read_slot(table, i)[0] or committed)
        return committed

    def check_all(self) -> None:
        """Check the lock of every slot once (when the writer opens)."""
        table = self.table
        for i in range(table.hwm()):
            slot = _read_slot(table, i)
            unlocked = slot[0] and not is_locked(table.fd, fmt.table_slot_offset(i))
            if unlocked and _read_slot(table, i) == slot:  # unchanged while unlocked: gone
                self.dead.add((i, *slot[1:]))


def _read_slot(table: ReaderTable, i: int) -> tuple[int, int, int, int]:
    """(generation, pid, start_time, since) of slot ``i``: the generation first and whole,
    since its owner stores it last."""
    off = fmt.table_slot_offset(i)
    gen = table.words.load64(off)
    _, pid, start, since = fmt.TABLE_SLOT.unpack_from(table.mm, off)
    return gen, pid, start, since
