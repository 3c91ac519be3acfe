#!/usr/bin/env bash
# Build the C core with AddressSanitizer + UndefinedBehaviorSanitizer and feed it N mutated files
# (default 1,000,000, and a fifth as many of each small file). Usage, from the repository root,
# after `pip install -e '.[test]'`:
#     tests/c/fuzz.sh [N]
# The same driver runs with 5,000 mutations in the test suite (tests/test_c_sanitizers.py), on
# the same base files. When a check fails or a sanitizer aborts on a mutated file, the files
# involved are kept in a directory the last line names.
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-1000000}"
work="$(mktemp -d "${TMPDIR_FUZZ:-/dev/shm}/mappedpages-fuzz.XXXXXX" 2>/dev/null || mktemp -d)"
trap 'rm -rf "$work"' EXIT
"${CC:-cc}" -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wpedantic -Werror -g -O1 \
    -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -Icsrc csrc/*.c tests/c/core_driver.c -o "$work/core_driver" -lpthread
python - "$work" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from test_c_sanitizers import make_bases  # the suite's base files, made by the pure core

work = Path(sys.argv[1])
make_bases(work / "fresh.mp", work / "busy.mp", work / "logged.mp")
PY
mkdir "$work/kept"
status=0
MAPPEDPAGES_KEEP="$work/kept" ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    "$work/core_driver" "$work/fresh.mp" "$work/busy.mp" "$work/scratch.mp" "$n" "$work/logged.mp" ||
    status=$?
if [ "$status" -ne 0 ] && [ -n "$(ls -A "$work/kept")" ]; then
    kept="$(mktemp -d "${TMPDIR:-/tmp}/mappedpages-fuzz-failed.XXXXXX")"
    cp "$work"/kept/* "$kept"/
    echo "driver failed ($status); the mutated files involved are in $kept" \
        "(current.mp: the last one it opened)" >&2
fi
exit "$status"
