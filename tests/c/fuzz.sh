#!/usr/bin/env bash
# Build the C core with AddressSanitizer + UndefinedBehaviorSanitizer and feed it N mutated files
# (default 1,000,000). Usage, from the repository root, after `pip install -e '.[test]'`:
#     tests/c/fuzz.sh [N]
# The same driver runs with 5,000 mutations in the test suite (tests/test_c_sanitizers.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-1000000}"
work="$(mktemp -d "${TMPDIR_FUZZ:-/dev/shm}/mappedpages-fuzz.XXXXXX" 2>/dev/null || mktemp -d)"
trap 'rm -rf "$work"' EXIT
"${CC:-cc}" -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -O1 \
    -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -Icsrc csrc/*.c tests/c/core_driver.c -o "$work/core_driver" -lpthread
MAPPEDPAGES_CORE=python python - "$work" <<'PY'
import sys, os
import mappedpages as mp
work = sys.argv[1]
mp.Pager.create(os.path.join(work, "fresh.mp"), 1024).close()
with mp.Pager.create(os.path.join(work, "base.mp"), 1024, sync=False) as p:
    ids = p.alloc_bulk(7400)
    p.free_bulk(ids[::3])
    p.alloc_protected_bulk(70)
with mp.Pager.create(os.path.join(work, "logged.mp"), 4096, sync=False) as p:
    for ppid in p.alloc_protected_bulk(4)[1:3]:
        with ppid.get_mut(p) as w:
            w.page_mut()[:2] = b"ok"
PY
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    "$work/core_driver" "$work/fresh.mp" "$work/base.mp" "$work/scratch.mp" "$n" "$work/logged.mp"
