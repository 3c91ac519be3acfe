"""The ``mappedpages`` command line.

Exit status: 0 = success (for ``check``: the file is sound), 1 = ``check`` found problems,
2 = the command could not run (missing file, unreadable file, bad arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import _backend
from .checker import Report, check_file

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_ERROR = 2


def _inspect(path: str) -> Report:
    return check_file(path, _backend.CORE.crc32c)


def _cmd_info(args: argparse.Namespace) -> int:
    r = _inspect(args.file)
    if not r.page_size:  # not even the superblock could be read
        print(f"{args.file}: {r.problems[0]}")
        return EXIT_PROBLEMS
    fields = {
        "file": r.path,
        "file size": r.file_size,
        "format version": r.format_version,
        "page size": r.page_size,
        "page count": r.page_count,
        "free pages": r.free_count,
        "allocated data pages": r.allocated_data_pages,
        "generation": r.generation,
        "active metadata": r.active,
        "bitmap groups": r.groups,
        "protected pages": r.protected_pages,
        "directory pages": r.directory_pages,
    }
    if args.json:
        print(json.dumps({k.replace(" ", "_"): v for k, v in fields.items()} | {"ok": r.ok}))
    else:
        width = max(map(len, fields))
        for key, value in fields.items():
            print(f"{key:<{width}}  {value}")
        if not r.ok:
            print(f"{'problems':<{width}}  {len(r.problems)} (run 'mappedpages check')")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    r = _inspect(args.file)
    if r.ok:
        print(
            f"{args.file}: OK (generation {r.generation}, {r.page_count} pages, "
            f"{r.free_count} free, {r.groups} bitmap groups)"
        )
        for note in r.notes:
            print(f"  note: {note}")
        return EXIT_OK
    print(f"{args.file}: {len(r.problems)} problem(s)")
    for problem in r.problems:
        print(f"  - {problem}")
    return EXIT_PROBLEMS


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run

    print(run(args.dir, quick=not args.full))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mappedpages", description="Inspect, verify and benchmark mappedpages files."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show a file's page size, counts and commit state")
    info.add_argument("file")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_cmd_info)
    check = sub.add_parser("check", help="verify every checksum and invariant (exit 0 if sound)")
    check.add_argument("file")
    check.set_defaults(run=_cmd_check)
    bench = sub.add_parser("bench", help="time the C core against the pure-Python core")
    bench.add_argument("--dir", help="directory for the temporary file (default: $TMPDIR)")
    bench.add_argument("--full", action="store_true", help="more iterations (slower, steadier)")
    bench.set_defaults(run=_cmd_bench, file=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except OSError as exc:
        print(
            f"mappedpages {args.command}: {exc.filename or args.file}: {exc.strerror}",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
