#!/usr/bin/env bash
# Runtime micro-benchmarks: fan-out ring cost per viewer and cross-shard feed
# throughput/latency. Builds in release, runs both binaries, prints markdown
# (machine, commit, exact commands, tables) to stdout and to bench/out/micro-<commit>.md.
#
#   bench/micro.sh            # full run, ~1 min on 2 cores
#   MICRO_SECS=0.3 bench/micro.sh   # quick smoke run
#
# The two binaries only use the `shards` runtime. While the workspace's server crate
# does not build (bench/ depends on it for swarm), the script builds them standalone
# against the same sources, Cargo.lock and release profile, and says so in the output.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${MICRO_SECS:-1}
target=${CARGO_TARGET_DIR:-$root/target}
bin_dir="$target/release"
shown_bin=${bin_dir#"$root"/}
build_log=$(mktemp)
failed=$(mktemp -u)
trap 'rm -f "$build_log" "$failed"' EXIT

build_how="cargo build --release -p shardcast-bench --bin fanout --bin feeds"
if ! cargo build --release -p shardcast-bench --bin fanout --bin feeds >"$build_log" 2>&1; then
    # Standalone package: same source files, same lock file, same release profile.
    standalone="$target/micro-standalone"
    mkdir -p "$standalone"
    cp Cargo.lock "$standalone/Cargo.lock"
    cat >"$standalone/Cargo.toml" <<TOML
[package]
name = "shardcast-micro"
version = "0.1.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
shards = { path = "$root/shards" }
bytes = "1"
hdrhistogram = "7"
nix = { version = "0.29", features = ["resource"] }

[[bin]]
name = "fanout"
path = "$root/bench/src/bin/fanout.rs"

[[bin]]
name = "feeds"
path = "$root/bench/src/bin/feeds.rs"

[profile.release]
debug = 1
codegen-units = 4
TOML
    echo "workspace build failed (last lines below); building the micro-benchmarks standalone" >&2
    tail -n 5 "$build_log" >&2
    build_how="cargo build --release --manifest-path $standalone/Cargo.toml (workspace build failed)"
    cargo build --release --manifest-path "$standalone/Cargo.toml" --target-dir "$target" >"$build_log" 2>&1 \
        || { cat "$build_log" >&2; exit 1; }
fi

commit=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain -- bench/src/bin/fanout.rs bench/src/bin/feeds.rs shards | grep -q . && echo " (+ uncommitted changes)" || true)
mkdir -p bench/out
out="bench/out/micro-$commit.md"
{
    echo "### Run of $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- commit: \`$commit\`$dirty"
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
    echo "- rustc: $(rustc --version)"
    echo "- build: \`$build_how\`"
    echo
    for bench in fanout feeds; do
        echo "#### $bench: \`$shown_bin/$bench --secs $secs\`"
        echo
        # A run that hangs gives up by itself (exit 3); say so and go on to the next.
        "$bin_dir/$bench" --secs "$secs" || { rc=$?; echo; echo "**$bench failed with exit status $rc** (see stderr)"; touch "$failed"; }
        echo
    done
} | tee "$out"
echo >&2
echo "written to $out" >&2
if [ -e "$failed" ]; then exit 1; fi
