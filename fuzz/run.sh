#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s each), starting
# from the committed corpus. Not part of CI: it needs a nightly toolchain
# and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   fuzz/run.sh                 # every target, 60 s each
#   fuzz/run.sh 600             # every target, 10 min each
#   fuzz/run.sh 30 bigid_answer # one target
#
# New inputs that reach new code are written to fuzz/corpus/<target>/ (worth
# committing when small); a crash is saved under fuzz/artifacts/<target>/ and
# the script exits non-zero. Reproduce one with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "needs a nightly toolchain and cargo-fuzz: rustup toolchain install nightly && cargo install cargo-fuzz" >&2
    exit 2
fi
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi


for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "== fuzzing $target for ${seconds}s"
    # -rss_limit_mb: the parsers must stay small whatever they are fed.
    # -timeout: one input taking over 10 s is a hang, reported as a crash.
    cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=512 -timeout=10 -max_len=65536
done
echo "== no crash in ${targets[*]}"
