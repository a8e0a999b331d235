#!/usr/bin/env bash
# Instructions per call, counted by valgrind's callgrind: the figure to compare
# builds by (docs/performance.md explains the method).
#
# Builds the server with the `profiling` profile (the release build with
# symbols, so `callgrind_annotate` can name functions) and runs the
# whole-process harness in its callgrind mode. Prints a Markdown table on
# stdout; the profiles stay in target/tmp/callgrind/.
#
# Knobs: BENCH_CALLS (N, default 2000: runs with N and 2N calls),
# BENCH_CALLGRIND_DIR (where the profiles go), BENCH_BIN (count another
# server binary instead of building one).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
    echo "valgrind is not installed (Debian/Ubuntu: apt-get install valgrind)" >&2
    exit 1
fi
if [ -z "${BENCH_BIN:-}" ]; then
    cargo build --profile profiling --bin bigid-auth-mcp
    BENCH_BIN="$PWD/target/profiling/bigid-auth-mcp"
fi
BENCH_BIN="$BENCH_BIN" BENCH_PHASES=callgrind exec cargo bench --bench whole_process
