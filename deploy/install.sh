#!/usr/bin/env bash
# Build and install shardcast as a systemd service. Safe to run again: it upgrades the
# binary, profiles and unit, and never overwrites an edited /etc/shardcast/shardcast.toml
# (the new default goes next to it as shardcast.toml.dist).
#
#   deploy/install.sh [--no-build] [--no-start] [--sysctl] [--prefix DIR]
#
#   --no-build   install target/release/shardcast as it is (build it yourself first)
#   --no-start   install and enable, but do not (re)start the service
#   --sysctl     also install tuning/sysctl-shardcast.conf and apply it
#   --prefix     install the binary to DIR/bin (default /usr/local)
#
# DESTDIR=/some/dir stages every file below that directory and skips systemctl and
# sysctl (for packaging, and to try the script without root).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=/usr/local
build=1 start=1 sysctl=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --no-build) build=0 ;;
        --no-start) start=0 ;;
        --sysctl) sysctl=1 ;;
        --prefix) prefix=${2:?--prefix needs a directory}; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

dest=${DESTDIR:-}
live=1
[[ -n $dest ]] && live=0
if [[ $live == 1 && $EUID -ne 0 ]]; then
    echo "install.sh: run as root (sudo), or set DESTDIR to stage the files" >&2
    exit 1
fi
say() { echo "install.sh: $*"; }

bin=$repo/target/release/shardcast
if [[ $build == 1 ]]; then
    # Under sudo, build as the invoking user: their toolchain, their cargo cache, and no
    # root-owned files left in target/.
    if [[ $EUID -eq 0 && -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
        say "building as $SUDO_USER"
        sudo -u "$SUDO_USER" -H bash -lc "cd '$repo' && cargo build --release --locked -p shardcast"
    else
        (cd "$repo" && cargo build --release --locked -p shardcast)
    fi
fi
[[ -x $bin ]] || { echo "install.sh: $bin not found; build it or drop --no-build" >&2; exit 1; }

# Binary: install(1) replaces the file atomically, so a running service keeps its old
# inode until restart.
install -D -m 0755 "$bin" "$dest$prefix/bin/shardcast"
say "binary -> $prefix/bin/shardcast"

# Config: keep the operator's file; stage the shipped default beside it when it differs.
etc=$dest/etc/shardcast
install -d -m 0755 "$etc" "$etc/profiles"
if [[ ! -e $etc/shardcast.toml ]]; then
    install -m 0644 "$repo/shardcast.toml" "$etc/shardcast.toml"
    say "config -> /etc/shardcast/shardcast.toml (edit server.bind to serve other hosts)"
elif ! cmp -s "$repo/shardcast.toml" "$etc/shardcast.toml"; then
    install -m 0644 "$repo/shardcast.toml" "$etc/shardcast.toml.dist"
    say "kept your /etc/shardcast/shardcast.toml; the shipped default is shardcast.toml.dist"
fi
install -m 0644 "$repo"/tuning/profiles/*.toml "$etc/profiles/"
say "profiles -> /etc/shardcast/profiles/"

# Unit: point ExecStart at the chosen prefix.
unit=$dest/etc/systemd/system/shardcast.service
install -d -m 0755 "$(dirname "$unit")"
sed "s#/usr/local/bin/shardcast#$prefix/bin/shardcast#g" "$repo/deploy/shardcast.service" > "$unit.tmp"
chmod 0644 "$unit.tmp"
mv -f "$unit.tmp" "$unit"
say "unit -> /etc/systemd/system/shardcast.service"

if [[ $sysctl == 1 ]]; then
    install -D -m 0644 "$repo/tuning/sysctl-shardcast.conf" "$dest/etc/sysctl.d/60-shardcast.conf"
    say "sysctl -> /etc/sysctl.d/60-shardcast.conf"
    if [[ $live == 1 ]]; then
        systemctl restart systemd-sysctl || sysctl --system >/dev/null
    fi
fi

# Validate with the new binary before touching the running service.
"$dest$prefix/bin/shardcast" --config "$etc/shardcast.toml" --check-config

if [[ $live == 1 ]]; then
    systemctl daemon-reload
    systemctl enable shardcast.service >/dev/null
    if [[ $start == 1 ]]; then
        # restart starts it if stopped and picks up a new binary if running.
        systemctl restart shardcast.service
        say "started; logs: journalctl -u shardcast -f"
    else
        say "enabled; start with: systemctl start shardcast"
    fi
fi
