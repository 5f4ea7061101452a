#!/usr/bin/env bash
# Compaction benchmark: svgen's token-aware writer vs svgo (default preset) on real icons.
#
# Fetches pinned releases of two real npm icon sets into a temporary directory (nothing is
# committed), installs svgo locally there, runs svgo's default preset over a deterministic
# sample of the icons, then runs the Rust comparison (examples/compact_vs_svgo.rs), which
# prints total cl100k tokens (original / ours / svgo) and checks that EVERY output stays
# visually equal to the original (ink IoU >= 0.99 at 256 px), for ours and for svgo.
#
# Usage: tools/bench_compact/run.sh [--all] [--keep DIR]
#   --all       every icon of both sets (about 14,000) instead of the 700-icon sample
#   --keep DIR  work in DIR and keep it (default: a temporary directory, removed afterwards)
# Needs: node + npm (registry access), cargo.
set -euo pipefail

TABLER_VERSION=3.52.0 # @tabler/icons, MIT
MDI_VERSION=7.4.47    # @mdi/svg, Apache-2.0
SVGO_VERSION=4.0.0    # svgo, MIT

repo="$(cd "$(dirname "$0")/../.." && pwd)"
all=0
work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --all) all=1 ;;
    --keep) shift; work="$1"; mkdir -p "$work" ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$work" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
cd "$work"

if [ ! -d tabler ]; then
  npm pack --silent "@tabler/icons@${TABLER_VERSION}" >/dev/null
  mkdir tabler && tar xzf "tabler-icons-${TABLER_VERSION}.tgz" -C tabler --strip-components=1
fi
if [ ! -d mdi ]; then
  npm pack --silent "@mdi/svg@${MDI_VERSION}" >/dev/null
  mkdir mdi && tar xzf "mdi-svg-${MDI_VERSION}.tgz" -C mdi --strip-components=1
fi
if [ ! -x node_modules/.bin/svgo ]; then
  [ -f package.json ] || echo '{"private":true}' > package.json
  npm install --silent --no-audit --no-fund "svgo@${SVGO_VERSION}" >/dev/null
fi

# A deterministic sample: every 18th outline icon (300), every 10th filled icon (100) and
# every 24th MDI icon (300), in byte order of the file names.
pick() { # DIR STEP MAX DEST
  mkdir -p "$4"
  find "$1" -maxdepth 1 -name '*.svg' | LC_ALL=C sort |
    awk -v s="$2" 'NR % s == 1' | head -n "$3" | xargs -I{} cp {} "$4/"
}
rm -rf orig svgo_out
if [ "$all" = 1 ]; then
  pick tabler/icons/outline 1 100000 orig/tabler-outline
  pick tabler/icons/filled 1 100000 orig/tabler-filled
  pick mdi/svg 1 100000 orig/mdi
else
  pick tabler/icons/outline 18 300 orig/tabler-outline
  pick tabler/icons/filled 10 100 orig/tabler-filled
  pick mdi/svg 24 300 orig/mdi
fi
echo "icons: $(find orig -name '*.svg' | wc -l)"

start=$(date +%s.%N)
node_modules/.bin/svgo --quiet -r -f orig -o svgo_out
end=$(date +%s.%N)
echo "svgo ${SVGO_VERSION} default preset, whole sample: $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s"

cd "$repo"
cargo run --release --quiet --no-default-features --example compact_vs_svgo -- \
  --original "$work/orig" --svgo "$work/svgo_out"
