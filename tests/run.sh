#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs the real clients the
# tests use (ffmpeg/ffprobe, nginx-rtmp for the RTMP client interop test, Chromium +
# playwright-core + hls.js for the browser test),
# then runs every test of the workspace. `.ci/run` calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(libnginx-mod-rtmp)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
if ((${#need[@]})); then
  echo "tests/run.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -f tests/browser/package.json ] && [ ! -d tests/browser/node_modules ]; then
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

# glommio needs locked memory for io_uring buffers.
ulimit -l unlimited 2>/dev/null || ulimit -l 1048576 2>/dev/null || true

cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast -- --test-threads "${SHARDCAST_TEST_THREADS:-4}"
