#!/usr/bin/env bash
# HLS request rate of one server: wrk against the live playlist and against the newest
# segment it lists, pinned to the load CPU, while the server is pinned to its own core
# (bench/compare starts the server and a publisher, then calls this once per server).
#
#   bench/hls-wrk.sh NAME BASE_URL PID [SECONDS] [CONNECTIONS]
#   e.g. bench/hls-wrk.sh shardcast http://127.0.0.1:18080/live/bench 1234 8 64
#
# Prints one markdown row per target: name, target, requests/s, server CPU % during the
# run (100% = its one core saturated, so requests/s is per core), non-2xx count.
set -euo pipefail
name=$1 base=$2 pid=$3 secs=${4:-8} conns=${5:-64}
load_cpu=${LOAD_CPU:-1}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }

ticks() { # utime+stime of $pid (field 14+15; the name in parentheses may hold spaces)
    sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}'
}

resolve() { # URI $2 relative to playlist URL $1
    case $2 in
        http*) echo "$2" ;;
        /*) echo "${1%%/live/*}$2" ;;
        *) echo "${1%/*}/$2" ;;
    esac
}
last_uri() { grep -v '^#' | grep -v '^$' | tail -1; }

playlist="$base.m3u8"
deadline=$((SECONDS + 30))
until body=$(curl -sf "$playlist") && grep -q '^#EXTINF' <<<"$body"; do
    # a multivariant playlist: follow its (last) variant to the media playlist
    if grep -q '^#EXT-X-STREAM-INF' <<<"${body:-}"; then
        playlist=$(resolve "$playlist" "$(last_uri <<<"$body")")
        continue
    fi
    if ((SECONDS > deadline)); then echo "no media playlist with segments at $playlist after 30 s" >&2; exit 1; fi
    sleep 0.5
done
for target in "$playlist" SEGMENT; do
    if [[ $target == SEGMENT ]]; then
        # The newest segment, picked right before its run: it stays in the live window
        # longest (one picked before the playlist run fell out of the window and the
        # run measured 404s).
        target=$(resolve "$playlist" "$(curl -sf "$playlist" | last_uri)")
        seg_url=$target
        seg_bytes=$(curl -sf "$seg_url" | wc -c)
    fi
    t0=$(ticks)
    out=$(taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${secs}s" --latency "$target")
    t1=$(ticks)
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    cpu=$(awk -v a="$t0" -v b="$t1" -v s="$secs" 'BEGIN {printf "%.0f", (b - a) / s}')
    kind=playlist
    [[ $target == "${seg_url:-}" ]] && kind="segment (${seg_bytes} B)"
    echo "| $name | $kind | $rps | $cpu | $p99 | ${non2xx:-0} |"
done
