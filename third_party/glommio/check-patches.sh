#!/bin/sh
# Verifies that this directory is glommio 0.9.0 as published on crates.io plus the
# patches in patches/ (applied in order), minus the benches/ and tests/ directories
# that PATCHES.md lists as removed.
#
# Usage: third_party/glommio/check-patches.sh [PRISTINE_DIR]
# PRISTINE_DIR defaults to the crate in cargo's registry cache. To get it:
#   mkdir -p /tmp/glp/src && cd /tmp/glp && touch src/lib.rs &&
#   printf '[package]\nname="glp"\nversion="0.0.0"\nedition="2021"\n[dependencies]\nglommio="=0.9.0"\n' > Cargo.toml &&
#   cargo fetch
# Exit status: 0 when the trees match, 1 when they differ, 2 when the pristine source
# is not available or a patch does not apply.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
pristine=${1:-}
if [ -z "$pristine" ]; then
    for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/glommio-0.9.0; do
        [ -d "$d" ] && pristine=$d
    done
fi
if [ -z "$pristine" ] || [ ! -f "$pristine/src/executor/mod.rs" ]; then
    echo "check-patches: pristine glommio 0.9.0 not found; pass its directory or 'cargo fetch' it (see the header of this script)" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a "$pristine" "$work/tree"
# Removed as published (PATCHES.md), and cargo's own bookkeeping file.
rm -rf "$work/tree/benches" "$work/tree/tests" "$work/tree/.cargo_vcs_info.json"

for p in "$here"/patches/*.patch; do
    if ! patch -s -p1 -d "$work/tree" --no-backup-if-mismatch < "$p"; then
        echo "check-patches: $(basename "$p") does not apply to $pristine" >&2
        exit 2
    fi
done

# Our own files, not part of the crate.
if diff -r -u -x PATCHES.md -x patches -x check-patches.sh "$work/tree" "$here"; then
    echo "check-patches: vendored glommio == pristine 0.9.0 + $(ls "$here"/patches/*.patch | wc -l) patches"
else
    echo "check-patches: vendored tree differs from pristine + patches (diff above)" >&2
    exit 1
fi
