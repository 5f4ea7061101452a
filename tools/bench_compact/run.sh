#!/usr/bin/env bash
# Compaction benchmark: svgen's token-aware writer vs svgo (default preset) on real icon sets.
#
# Fetches pinned releases of real npm icon sets with `npm pack` into a temporary directory
# (nothing is committed), installs svgo locally there, runs svgo's default preset over a
# deterministic sample of every set, then runs the Rust comparison (examples/compact_vs_svgo.rs).
# It prints, per set and overall: cl100k tokens (original / ours / svgo), the ratio ours/svgo,
# and for ours and for svgo the number of icons that are not visually equal to the original
# (ink IoU < 0.99 or colour MAE > 0.01 at 256 px, every icon checked) and the largest colour MAE.
#
# Sets (version, licence of the graphics):
#   tabler-outline, tabler-filled  @tabler/icons 3.52.0          MIT
#   mdi                            @mdi/svg 7.4.47               Apache-2.0
#   lucide                         lucide-static 1.62.0          ISC
#   bootstrap                      bootstrap-icons 1.13.2        MIT
#   fluent                         @fluentui/svg-icons 1.1.343   MIT
#   twemoji                        @twemoji/svg 15.0.0           CC-BY-4.0 (Twemoji graphics; package MIT)
#   openmoji                       openmoji 17.0.0               CC-BY-SA-4.0
#   simple-icons (held out)        simple-icons 16.37.0          CC0-1.0
#
# The sample takes every k-th file in byte order of the names (k = files / per-set count), the
# first of each k (offset 1). `--held-out` takes the file in the middle of each k instead: a
# disjoint sample of the same sets, plus simple-icons, on which nothing was tuned.
#
# Usage: tools/bench_compact/run.sh [--held-out] [--per-set N] [--all] [--keep DIR] [-- ARGS]
#   --held-out   the held-out sample (see above)
#   --per-set N  icons per set (default 300; tabler-filled takes N/3)
#   --all        every icon of every set instead of a sample (about 60,000)
#   --keep DIR   work in DIR and keep it (default: a temporary directory, removed afterwards)
#   -- ARGS      passed on to the example (e.g. --render-size 512, --verbose, --out DIR)
# Needs: node + npm (registry access), cargo.
set -euo pipefail

TABLER_VERSION=3.52.0      # @tabler/icons, MIT
MDI_VERSION=7.4.47         # @mdi/svg, Apache-2.0
LUCIDE_VERSION=1.62.0      # lucide-static, ISC
BOOTSTRAP_VERSION=1.13.2   # bootstrap-icons, MIT
FLUENT_VERSION=1.1.343     # @fluentui/svg-icons, MIT
TWEMOJI_VERSION=15.0.0     # @twemoji/svg (jdecked/twemoji graphics, CC-BY-4.0)
OPENMOJI_VERSION=17.0.0    # openmoji, CC-BY-SA-4.0
SIMPLE_VERSION=16.37.0     # simple-icons, CC0-1.0
SVGO_VERSION=4.0.0         # svgo, MIT

repo="$(cd "$(dirname "$0")/../.." && pwd)"
all=0
held_out=0
per_set=300
work=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --all) all=1 ;;
    --held-out) held_out=1 ;;
    --per-set) shift; per_set="$1" ;;
    --keep) shift; work="$1"; mkdir -p "$work" ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$work" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
cd "$work"

fetch() { # DIR PACKAGE VERSION
  if [ ! -d "$1" ]; then
    local tgz
    tgz="$(npm pack --silent "$2@$3" | tail -n 1)"
    mkdir "$1" && tar xzf "$tgz" -C "$1" --strip-components=1 && rm -f "$tgz"
  fi
}
fetch tabler @tabler/icons "$TABLER_VERSION"
fetch mdi @mdi/svg "$MDI_VERSION"
fetch lucide lucide-static "$LUCIDE_VERSION"
fetch bootstrap bootstrap-icons "$BOOTSTRAP_VERSION"
fetch fluent @fluentui/svg-icons "$FLUENT_VERSION"
fetch twemoji @twemoji/svg "$TWEMOJI_VERSION"
fetch openmoji openmoji "$OPENMOJI_VERSION"
fetch simple simple-icons "$SIMPLE_VERSION"
if [ ! -x node_modules/.bin/svgo ]; then
  [ -f package.json ] || echo '{"private":true}' > package.json
  npm install --silent --no-audit --no-fund "svgo@${SVGO_VERSION}" >/dev/null
fi

# pick DIR COUNT DEST: a deterministic sample of COUNT files of DIR (see the header).
pick() {
  mkdir -p "$3"
  local n k off
  n="$(find "$1" -maxdepth 1 -name '*.svg' | wc -l)"
  if [ "$all" = 1 ]; then
    k=1
  else
    k=$(( n / $2 )); [ "$k" -ge 1 ] || k=1
  fi
  off=$(( held_out == 1 ? (k / 2) % k : 0 ))
  if [ "$held_out" = 1 ] && [ "$k" -lt 2 ]; then
    echo "set $1 is too small for a disjoint held-out sample" >&2; exit 1
  fi
  find "$1" -maxdepth 1 -name '*.svg' | LC_ALL=C sort |
    awk -v k="$k" -v o="$off" '(NR - 1) % k == o' | head -n "$([ "$all" = 1 ] && echo "$n" || echo "$2")" |
    xargs -I{} cp {} "$3/"
}
rm -rf orig svgo_out
pick tabler/icons/outline "$per_set" orig/tabler-outline
pick tabler/icons/filled "$(( per_set / 3 ))" orig/tabler-filled
pick mdi/svg "$per_set" orig/mdi
pick lucide/icons "$per_set" orig/lucide
pick bootstrap/icons "$per_set" orig/bootstrap
pick fluent/icons "$per_set" orig/fluent
pick twemoji "$per_set" orig/twemoji
pick openmoji/color/svg "$per_set" orig/openmoji
if [ "$held_out" = 1 ]; then
  pick simple/icons "$per_set" orig/simple-icons
fi
echo "icons: $(find orig -name '*.svg' | wc -l) ($([ "$held_out" = 1 ] && echo held-out || echo tuning) sample)"

start=$(date +%s.%N)
node_modules/.bin/svgo --quiet -r -f orig -o svgo_out
end=$(date +%s.%N)
echo "svgo ${SVGO_VERSION} default preset, whole sample: $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s"

cd "$repo"
cargo run --release --quiet --no-default-features --example compact_vs_svgo -- \
  --original "$work/orig" --svgo "$work/svgo_out" "${extra[@]}"
