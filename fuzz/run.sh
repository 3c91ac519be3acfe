#!/usr/bin/env bash
# Fuzz the C core under AddressSanitizer + UBSan with atheris (pip install atheris).
#     fuzz/run.sh -runs=1000000          (any libFuzzer options)
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
module="$(python fuzz/build_asan.py "$out" | tail -1)"
asan="$("${CC:-cc}" -print-file-name=libasan.so)"
export MAPPEDPAGES_ASAN_MODULE="$module" MAPPEDPAGES_CORE=c
# Python's own allocations are not leaks worth reporting; memory errors abort at once
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
LD_PRELOAD="$asan" python fuzz/fuzz_files.py -atheris_runs="${RUNS:-0}" "$@"
