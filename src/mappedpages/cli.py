"""The ``mappedpages`` command line: ``info``, ``check``, ``dump``, ``readers``, ``backup``,
``shrink`` and ``bench``.

The inspecting commands read files with ``pread`` only: none maps a file or takes its lock, so
each works on a file that a writer holds open (``readers`` reads the reader table beside it).
``backup`` reads through a snapshot, which a writer never waits for; ``shrink`` opens the file
as its writer, so it fails while another writer holds it.

Exit status:

* 0 -- success (for ``check``: the file is sound);
* 1 -- ``check`` or ``info`` found problems, or the file is not a mappedpages file (or, for
  ``backup`` and ``shrink``, is damaged);
* 2 -- the command could not run: bad arguments (usage error, ``dump`` of a page outside the
  file), or a missing or unreadable file.

``info --json`` and ``check --json`` print one JSON object in every case, with the same keys:
null for what could not be read, and ``error`` (null unless the file could not be read at all).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from . import _backend
from . import format as fmt
from .checker import Report, check_file
from .errors import FileLocked, InvalidPageSize, MappedPageError

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_ERROR = 2

EXIT_CODES = """\
exit status:
  0  success (check: the file is sound)
  1  problems found, or not a mappedpages file
  2  usage error, or a missing, unreadable or locked file"""

PROGRESS_MIN_LEAVES = 1024  # show progress only for files with more bitmap leaves than this
PROGRESS_MIN_BYTES = 64 << 20  # and for backups of more bytes than this
BYTES_PER_LINE = 16


class _Fail(Exception):
    """A one-line error for the user: printed to stderr, then exit with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- progress -------------------------------------------------------------------------------


class _Progress:
    """A progress callback, ``progress(done, total)``: a ``checking: k/n leaves`` line (or
    ``backing up: 42%``) on a TTY, for work larger than ``minimum``."""

    def __init__(
        self, stream: TextIO, minimum: int = PROGRESS_MIN_LEAVES, percent: str = ""
    ) -> None:
        self.stream = stream
        self.minimum = minimum
        self.percent = percent  # the label of a percentage, or "" for "checking: k/n leaves"
        self.width = 0  # length of the line on screen, 0 when nothing is shown
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        if total <= self.minimum or not self.stream.isatty():
            return
        if self.percent:
            pct = done * 100 // total
            if pct == self.shown:
                return
            self.shown = pct
            line = f"{self.percent}: {pct}%"
        else:
            line = f"checking: {done}/{total} bitmap leaves"
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def clear(self) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def _inspect(path: str) -> Report:
    progress = _Progress(sys.stderr)
    try:
        return check_file(path, _backend.CORE.crc32c, progress)
    finally:
        progress.clear()


# -- info and check -------------------------------------------------------------------------


def _fields(r: Report, opened: bool = True) -> dict[str, object]:
    """What ``info`` shows, None for what could not be read.

    A report holds zeros where the checker did not get: the counts are the state's only once
    a commit's state was read (``page_count`` is then at least the reserved pages), and the
    record's own fields only once a format-2 record was taken (``record`` >= 0).
    """
    state = r.page_count > 0
    record = r.record >= 0
    return {
        "file": r.path,
        "file size": r.file_size if opened else None,
        "format version": r.format_version or None,
        "page size": r.page_size or None,
        "page count": r.page_count if state else None,
        "free pages": r.free_count if state else None,
        "allocated data pages": r.allocated_data_pages if state else None,
        "protected pages": r.protected_pages if state else None,
        "internal pages": r.internal_pages if record else None,
        "pending pages": r.pending_pages if record else None,
        "generation": r.generation if state else None,
        "commit record": r.record if record else None,
        "checkpoint": r.checkpoint if record else None,
        "log words": r.log_words if record else None,
        "tree blocks": r.tree_blocks if record else None,
    }


def _json_report(
    r: Report, fields: dict[str, object] | None = None, error: str | None = None
) -> str:
    out = {k.replace(" ", "_"): v for k, v in (fields or {"file": r.path}).items()}
    out |= {"ok": r.ok and error is None, "problems": r.problems, "notes": r.notes}
    return json.dumps(out | {"error": error})


def _report_or_json(args: argparse.Namespace, info: bool) -> Report:
    """The file's report; when it cannot be made and ``--json`` is given, the JSON object is
    printed all the same (every field null but ``file``, and ``error``) before the error
    goes on to ``main``, so a script reading the output always gets one object."""
    try:
        return _inspect(args.file)
    except Exception as exc:
        if args.json:
            blank = Report(args.file)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
            error = why or f"{type(exc).__name__}: {exc}"
            print(_json_report(blank, _fields(blank, opened=False) if info else None, error))
        raise


def _cmd_info(args: argparse.Namespace) -> int:
    r = _report_or_json(args, info=True)
    fields = _fields(r)
    if args.json:
        print(_json_report(r, fields))
    else:
        width = max(map(len, fields))
        for key, value in fields.items():
            print(f"{key:<{width}}  {'-' if value is None else value}")
        if not r.ok:
            print(f"{'problems':<{width}}  {len(r.problems)} (run 'mappedpages check')")
    return EXIT_OK if r.ok else EXIT_PROBLEMS


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _cmd_check(args: argparse.Namespace) -> int:
    r = _report_or_json(args, info=False)
    notes = f", {_plural(len(r.notes), 'note')}" if r.notes else ""
    if args.json:
        print(_json_report(r))
    elif r.ok:
        print(
            f"{args.file}: OK, 0 problems (generation {r.generation}, {r.page_count} pages, "
            f"{r.free_count} free, format {r.format_version}{notes})"
        )
    elif args.verbose:
        print(f"{args.file}: {_plural(len(r.problems), 'problem')}{notes}")
    else:
        more = "; --verbose lists all" if len(r.problems) > 1 or r.notes else ""
        print(f"{args.file}: {_plural(len(r.problems), 'problem')}{notes}: {r.problems[0]}{more}")
    if args.verbose and not args.json:
        for problem in r.problems:
            print(f"  problem: {problem}")
        for note in r.notes:
            print(f"  note: {note}")
    return EXIT_OK if r.ok else EXIT_PROBLEMS


# -- dump -----------------------------------------------------------------------------------


def _page_size(fd: int) -> int:
    """The page size named by the superblock; ``_Fail`` (exit 1) for a foreign file."""
    head = os.pread(fd, fmt.IDENTITY.size + 4, 0)
    if len(head) < fmt.IDENTITY.size + 4:
        raise _Fail("not a mappedpages file: shorter than a superblock", EXIT_PROBLEMS)
    ident, _crc = fmt.unpack_identity(head)
    if ident.magic != fmt.MAGIC:
        raise _Fail("not a mappedpages file: bad magic", EXIT_PROBLEMS)
    if not fmt.valid_page_size(ident.page_size):
        raise _Fail(f"not a mappedpages file: invalid page size {ident.page_size}", EXIT_PROBLEMS)
    return int(ident.page_size)


def _parse_page(text: str, page_count: int) -> int:
    try:
        page = int(text, 0)
    except ValueError:
        raise _Fail(f"page {text!r} is not an integer", EXIT_ERROR) from None
    if not 0 <= page < page_count:
        raise _Fail(f"page {page} is outside the file (pages 0..{page_count - 1})", EXIT_ERROR)
    return page


def hex_lines(data: bytes, offset: int = 0) -> Iterator[str]:
    """``data`` as ``hexdump -C`` lines, offsets starting at ``offset``.

    A run of identical all-zero lines shows as its first line and ``*``; when the run reaches
    the end of ``data`` its last line follows, so the extent of the dump stays visible.
    """
    zero = bytes(BYTES_PER_LINE)
    end = len(data)
    in_run = False
    for start in range(0, end, BYTES_PER_LINE):
        chunk = data[start : start + BYTES_PER_LINE]
        last = start + BYTES_PER_LINE >= end
        if chunk == zero and start and data[start - BYTES_PER_LINE : start] == zero and not last:
            if not in_run:
                yield "*"
                in_run = True
            continue
        in_run = False
        yield _hex_line(chunk, offset + start)


def _hex_line(chunk: bytes, offset: int) -> str:
    halves = (chunk[:8], chunk[8:BYTES_PER_LINE])
    hexes = "  ".join(" ".join(f"{b:02x}" for b in half) for half in halves)
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
    return f"{offset:08x}  {hexes:<{3 * BYTES_PER_LINE - 1}}  |{text}|"


def _cmd_dump(args: argparse.Namespace) -> int:
    if args.length is not None and args.length < 1:
        raise _Fail(f"--length must be at least 1, not {args.length}", EXIT_ERROR)
    fd = os.open(args.file, os.O_RDONLY | os.O_CLOEXEC)
    try:
        page_size = _page_size(fd)
        page = _parse_page(args.page, os.fstat(fd).st_size // page_size)
        length = page_size if args.length is None else min(args.length, page_size)
        data = os.pread(fd, length, page * page_size)
    finally:
        os.close(fd)
    for line in hex_lines(data, page * page_size):
        print(line)
    return EXIT_OK


# -- readers --------------------------------------------------------------------------------


def _cmd_readers(args: argparse.Namespace) -> int:
    import time

    from . import readers

    if not os.path.exists(args.file):
        raise FileNotFoundError(2, "No such file or directory", args.file)
    live = readers(args.file)
    if args.json:
        print(json.dumps([r._asdict() for r in live]))
        return EXIT_OK
    if not live:
        print(f"{args.file}: no live snapshots")
        return EXIT_OK
    now = time.time()
    print(f"{'pid':>8}  {'generation':>12}  age")
    for r in sorted(live, key=lambda r: (r.generation, r.pid)):
        print(f"{r.pid:>8}  {r.generation:>12}  {max(0.0, now - r.since):.1f} s")
    return EXIT_OK


# -- backup and shrink ----------------------------------------------------------------------


def _cmd_backup(args: argparse.Namespace) -> int:
    from .readonly import ReadOnlyPager

    progress = _Progress(sys.stderr, PROGRESS_MIN_BYTES, "backing up")
    with ReadOnlyPager.open(args.file) as ro:
        try:
            ro._backup(os.fspath(args.dest), progress)
        finally:
            progress.clear()
        print(f"{args.dest}: generation {ro.generation}, {_plural(ro.page_count, 'page')}")
    return EXIT_OK


def _cmd_shrink(args: argparse.Namespace) -> int:
    from .pager import Pager

    with Pager.open(args.file) as p:
        lost = p.shrink()
        print(
            f"{args.file}: {_plural(lost, 'page')} given back, {_plural(p.page_count, 'page')} left"
        )
    return EXIT_OK


# -- bench ----------------------------------------------------------------------------------


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run

    print(run(args.dir, quick=not args.full))
    return EXIT_OK


# -- the parser -----------------------------------------------------------------------------


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=80)


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="mappedpages",
        description=_wrap(
            "Inspect, verify, copy, shrink and benchmark mappedpages files. The inspecting "
            "commands read the file without mapping or locking it, so they work on a file a "
            "writer holds open."
        ),
        epilog=EXIT_CODES,
        formatter_class=raw,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"mappedpages {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, summary: str, description: str, run: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name,
            help=summary,
            description=_wrap(description),
            epilog=EXIT_CODES,
            formatter_class=raw,
        )
        p.set_defaults(run=run)
        return p

    info = command(
        "info",
        "show a file's page size, counts and commit state",
        "Show a file's page size, page counts (data, protected, internal, pending), its "
        "generation, commit record and checkpoint. Exits 1 when the file is damaged; with "
        "--json, one JSON object in every case: fields that cannot be read are null, and "
        "'error' says why a file could not be read at all.",
        _cmd_info,
    )
    info.add_argument("file", metavar="FILE", help="a mappedpages file")
    info.add_argument("--json", action="store_true", help="print one JSON object")

    check = command(
        "check",
        "verify every checksum and invariant (exit 0 if sound)",
        "Verify every checksum and invariant of a file: page 0, both commit records, every "
        "block of the bitmap and directory trees, the record's log, every protected page's "
        "content and the counts. Prints one line with the number of problems (with --json, "
        "one JSON object in every case); shows progress on stderr for large files when "
        "stderr is a terminal.",
        _cmd_check,
    )
    check.add_argument("file", metavar="FILE", help="a mappedpages file")
    check.add_argument(
        "-v", "--verbose", action="store_true", help="list every problem and note on its own line"
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")

    rd = command(
        "readers",
        "list the live snapshots of a file",
        "List the snapshots other processes hold on a file (from its reader table): process "
        "id, the generation each reads, and how long ago it was taken or refreshed. Snapshots "
        "of processes that died are not listed.",
        _cmd_readers,
    )
    rd.add_argument("file", metavar="FILE", help="a mappedpages file")
    rd.add_argument("--json", action="store_true", help="print a JSON list")

    dump = command(
        "dump",
        "hex view of one page",
        "Print one page as hex and ASCII (like 'hexdump -C'), offsets counted from the start "
        "of the file. Runs of all-zero lines collapse into '*'.",
        _cmd_dump,
    )
    dump.add_argument("file", metavar="FILE", help="a mappedpages file")
    dump.add_argument("page", metavar="PAGE", help="page number, from 0 (the superblock)")
    dump.add_argument(
        "-n", "--length", type=int, metavar="N", help="show only the first N bytes of the page"
    )

    backup = command(
        "backup",
        "copy one commit of a file, while a writer goes on",
        "Copy the newest commit of FILE into the new file DEST: consistently, while a writer "
        "goes on committing (the copy is taken from a snapshot, which the writer never waits "
        "for). It is written under a temporary name, synced and then linked as DEST, which "
        "must not exist; free pages are left as holes. Shows progress on stderr for large "
        "files when stderr is a terminal.",
        _cmd_backup,
    )
    backup.add_argument("file", metavar="FILE", help="a mappedpages file")
    backup.add_argument("dest", metavar="DEST", help="the copy to make (must not exist)")

    shrink = command(
        "shrink",
        "give the free pages at the end of a file back",
        "Truncate the free pages at the end of FILE in one atomic commit (two when protected "
        "pages or metadata blocks must move down first). Page numbers do not change; pages "
        "a live snapshot may still read are kept. Opens FILE as its writer: fails while "
        "another writer holds it.",
        _cmd_shrink,
    )
    shrink.add_argument("file", metavar="FILE", help="a mappedpages file")

    bench = command(
        "bench",
        "time the C core against the pure-Python core",
        "Time common operations on the C core and on the pure-Python core.",
        _cmd_bench,
    )
    bench.add_argument("--dir", help="directory for the temporary file (default: $TMPDIR)")
    bench.add_argument("--full", action="store_true", help="more iterations (slower, steadier)")
    bench.set_defaults(file=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except _Fail as exc:
        print(f"mappedpages {args.command}: {args.file}: {exc}", file=sys.stderr)
        return exc.code
    except MappedPageError as exc:  # backup and shrink open the file: it may be damaged or locked
        print(f"mappedpages {args.command}: {args.file}: {exc}", file=sys.stderr)
        return EXIT_ERROR if isinstance(exc, (FileLocked, InvalidPageSize)) else EXIT_PROBLEMS
    except OSError as exc:
        print(
            f"mappedpages {args.command}: {exc.filename or args.file}: {exc.strerror}",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
