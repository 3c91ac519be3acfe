"""What opening a large sparse file costs: time, resident memory and page-cache growth.

    python benchmarks/open_scale.py [--log2-pages 24] [--dir DIR] [--cold] [--keep PATH]

Makes (or reuses, with ``--keep``) a file of ``2**log2_pages`` pages of 1 KiB, grown by
allocation alone (``preallocate=False``, ``sync=False``; the pages handed out have their disk
space punched out again: 16 GiB apparent at 2^24 pages, a few MiB on disk), then opens it with
``ReadOnlyPager.open`` and ``Pager.open`` and refreshes a reader after one commit, on each
core, each in a fresh process so that its resident memory is its own. ``--cold`` drops the
page cache before the first open of each core (root only: ``sync; echo 3 >
/proc/sys/vm/drop_caches``); the reader's open touches little, so the writer's after it is
still cold. Prints one line per open: seconds, the child's VmRSS, and how much the system's
page cache (``Cached:`` in /proc/meminfo) grew, also as a multiple of the size of one bitmap of
the file (one bit a page). The cache figure is the system's: other work shows in it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def _meminfo_cached() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Cached:"):
                return int(line.split()[1]) * 1024
    return 0


def _vmrss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _punch(fd: int, first: int, count: int, page_size: int) -> None:
    """Give back the disk space of pages never written (they read as zeros either way)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    punch_hole, keep_size = 0x02, 0x01
    if libc.fallocate(fd, punch_hole | keep_size, first * page_size, count * page_size) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def make(path: str, pages: int) -> None:
    """Grow a 1 KiB-page file to ``pages`` pages by allocation, without writing the data.

    Allocation reserves the disk space of every page it hands out, so the pages each bulk call
    returned have their space punched out again at once: the file stays small on disk.
    """
    import mappedpages as mp
    from mappedpages import _backend

    with (
        _backend.using("c" if "c" in _backend.available() else "python"),
        mp.Pager.create(path, 1024, sync=False, preallocate=False) as p,
    ):
        # a second descriptor, closed only after the pager: closing one of a process's
        # descriptors of a file drops the process's fcntl locks on it
        fd = os.open(path, os.O_RDWR)
        try:
            while p.page_count < pages:
                got = [int(x) for x in p.alloc_bulk(min(1 << 20, pages - p.page_count))]
                start = prev = got[0]
                for i in [*got[1:], -1]:
                    if i != prev + 1:
                        _punch(fd, start, prev + 1 - start, 1024)
                        start = i
                    prev = i
        finally:
            p.close()
            os.close(fd)


def child(what: str, path: str) -> None:
    """One open in this process; prints its figures as JSON."""
    import mappedpages as mp

    cached = _meminfo_cached()
    start = time.perf_counter()
    if what == "writer":
        with mp.Pager.open(path, sync=False, preallocate=False) as p:
            seconds = time.perf_counter() - start
            rss, grown = _vmrss(), _meminfo_cached() - cached
            p.free(p.alloc())  # leaves the next child's reader a commit to refresh to
    elif what == "reader":
        with mp.ReadOnlyPager.open(path) as r:
            seconds = time.perf_counter() - start
            rss, grown = _vmrss(), _meminfo_cached() - cached
    else:  # refresh after a commit the writer made meanwhile
        with mp.ReadOnlyPager.open(path) as r, mp.Pager.open(path, sync=False) as w:
            w.free(w.alloc())
            cached = _meminfo_cached()
            start = time.perf_counter()
            r.refresh()
            seconds = time.perf_counter() - start
            rss, grown = _vmrss(), _meminfo_cached() - cached
    print(json.dumps({"seconds": seconds, "rss": rss, "cached": grown}))


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2-pages", type=int, default=24)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--cold", action="store_true", help="drop the page cache first (root)")
    ap.add_argument("--keep", metavar="PATH", help="reuse (or make and keep) this file")
    ap.add_argument("--cores", default="c,python")
    ap.add_argument("--child", nargs=2, metavar=("WHAT", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    pages = 1 << args.log2_pages
    path = args.keep or os.path.join(args.dir, f"open_scale_{os.getpid()}.mp")
    try:
        if not os.path.exists(path):
            start = time.perf_counter()
            make(path, pages)
            print(f"made {path}: {time.perf_counter() - start:.1f} s")
        st = os.stat(path)
        bitmap = pages // 8
        print(
            f"{pages} pages of 1 KiB: {st.st_size / 2**30:.1f} GiB apparent, "
            f"{st.st_blocks * 512 / 2**20:.1f} MiB on disk; one bitmap {bitmap / 2**20:.1f} MiB"
        )
        for core in args.cores.split(","):
            if args.cold:  # once per core: the reader's open touches little, the writer's next
                drop_caches()
            for what in ("reader", "writer", "refresh"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", what, path],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "MAPPEDPAGES_CORE": core},
                )
                r = json.loads(out.stdout)
                print(
                    f"{core:6} {what:7} {'cold' if args.cold else 'warm'}: "
                    f"{r['seconds']:7.3f} s  VmRSS {r['rss'] / 2**20:7.1f} MiB  "
                    f"page cache +{r['cached'] / 2**20:7.1f} MiB "
                    f"({r['cached'] / bitmap:.2f}x the bitmap)"
                )
    finally:
        if not args.keep and os.path.exists(path):
            os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
