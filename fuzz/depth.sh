#!/usr/bin/env bash
# Runs one fuzz target to depth, as recorded in STATUS.md: until 10 M executions or
# SECS seconds, from its seed dirs into a fresh working corpus (so the seeds are not
# written to), then prints libFuzzer's final stats.
#
#   fuzz/depth.sh TARGET MAX_LEN SECS SEED_DIR...
#
# No sanitizer: shardcast-proto is #![forbid(unsafe_code)], so ASan has nothing to find
# that Rust's own checks do not, and it costs ~2-3x. Debug assertions and overflow
# checks stay on in the optimised build. New finds go to $FUZZ_WORK/TARGET (default
# /tmp/shardcast-fuzz), crashes to fuzz/artifacts/TARGET/.
set -euo pipefail
target=$1 max_len=$2 secs=$3
shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
seeds=()
for d in "$@"; do seeds+=("$(cd "$root" && cd "$d" && pwd)"); done
work=${FUZZ_WORK:-/tmp/shardcast-fuzz}/$target
rm -rf "$work"
mkdir -p "$work"
cd "$root/fuzz"
set -x
exec nice -n 19 cargo +nightly fuzz run -s none --debug-assertions -O "$target" \
    "$work" "${seeds[@]}" -- \
    -runs=10000000 -max_total_time="$secs" -max_len="$max_len" \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
