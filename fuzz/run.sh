#!/usr/bin/env bash
# Fuzz the C core with atheris (pip install atheris), then replay everything it found under
# AddressSanitizer + UBSan.
#     fuzz/run.sh -runs=1000000          (any libFuzzer options for the first phase)
# Phase 1 runs coverage-guided on the normal build and grows a corpus (fuzz/corpus, or $CORPUS).
# Phase 2 replays every corpus input once on a sanitizer build of the C core. The phases are
# separate because preloading the compiler's ASan runtime into Python hides atheris' coverage
# callbacks (the fuzzer would run blind).
set -euo pipefail
cd "$(dirname "$0")/.."
corpus="${CORPUS:-fuzz/corpus}"
mkdir -p "$corpus"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "--- phase 1: coverage-guided, corpus in $corpus"
MAPPEDPAGES_CORE=c python fuzz/fuzz_files.py "$corpus" "$@"
echo "--- phase 2: every corpus input under ASan + UBSan"
module="$(python fuzz/build_asan.py "$out" | tail -1)"
asan="$("${CC:-cc}" -print-file-name=libasan.so)"
# Python's own allocations are not leaks worth reporting; memory errors abort at once
MAPPEDPAGES_ASAN_MODULE="$module" MAPPEDPAGES_CORE=c \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1" \
    LD_PRELOAD="$asan" python fuzz/fuzz_files.py "$corpus" -runs=0
