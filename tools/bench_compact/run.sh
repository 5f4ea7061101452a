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
#   simple-icons                   simple-icons 16.37.0          CC0-1.0
# and, with --held-out only (sets nothing was tuned on):
#   heroicons-outline              heroicons 2.2.0 (24/outline)  MIT
#   phosphor-thin, phosphor-duotone @phosphor-icons/core 2.1.1   MIT
#   octicons                       @primer/octicons 19.42.0      MIT
#   remixicon                      remixicon 4.9.1               Apache-2.0
#
# The sample takes every k-th file in byte order of the paths (k = files / per-set count), the
# first of each k. `--held-out` takes the file in the middle of each k instead (a disjoint
# sample of the tuning sets) and adds the five held-out sets.
#
# Usage: tools/bench_compact/run.sh [--held-out] [--per-set N] [--all] [--keep DIR] [-- ARGS]
#   --held-out   the held-out sample (see above)
#   --per-set N  icons per set (default 300; tabler-filled takes N/3)
#   --all        every icon of every set instead of a sample (about 64,000; with --held-out,
#                the held-out sets whole as well)
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
HEROICONS_VERSION=2.2.0    # heroicons, MIT (held out)
PHOSPHOR_VERSION=2.1.1     # @phosphor-icons/core, MIT (held out)
OCTICONS_VERSION=19.42.0   # @primer/octicons, MIT (held out)
REMIX_VERSION=4.9.1        # remixicon, Apache-2.0 (held out)
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
if [ "$held_out" = 1 ]; then
  fetch heroicons heroicons "$HEROICONS_VERSION"
  fetch phosphor @phosphor-icons/core "$PHOSPHOR_VERSION"
  fetch octicons @primer/octicons "$OCTICONS_VERSION"
  fetch remixicon remixicon "$REMIX_VERSION"
fi
if [ ! -x node_modules/.bin/svgo ]; then
  [ -f package.json ] || echo '{"private":true}' > package.json
  npm install --silent --no-audit --no-fund "svgo@${SVGO_VERSION}" >/dev/null
fi

# pick DIR COUNT DEST [OFFSET]: a deterministic sample of COUNT files under DIR (see the
# header); OFFSET "mid" takes the middle file of each k instead of the first.
pick() {
  mkdir -p "$3"
  local n k off
  n="$(find "$1" -name '*.svg' | wc -l)"
  if [ "$all" = 1 ]; then
    k=1
  else
    k=$(( n / $2 )); [ "$k" -ge 1 ] || k=1
  fi
  off=0
  if [ "${4:-}" = mid ] && [ "$all" = 0 ]; then
    if [ "$k" -lt 2 ]; then
      echo "set $1 is too small for a disjoint held-out sample" >&2; exit 1
    fi
    off=$(( k / 2 ))
  fi
  find "$1" -name '*.svg' | LC_ALL=C sort |
    awk -v k="$k" -v o="$off" '(NR - 1) % k == o' | head -n "$([ "$all" = 1 ] && echo "$n" || echo "$2")" |
    while read -r f; do cp "$f" "$3/"; done
}
rm -rf orig svgo_out
half=""
[ "$held_out" = 1 ] && half=mid
pick tabler/icons/outline "$per_set" orig/tabler-outline $half
pick tabler/icons/filled "$(( per_set / 3 ))" orig/tabler-filled $half
pick mdi/svg "$per_set" orig/mdi $half
pick lucide/icons "$per_set" orig/lucide $half
pick bootstrap/icons "$per_set" orig/bootstrap $half
pick fluent/icons "$per_set" orig/fluent $half
pick twemoji "$per_set" orig/twemoji $half
pick openmoji/color/svg "$per_set" orig/openmoji $half
pick simple/icons "$per_set" orig/simple-icons $half
if [ "$held_out" = 1 ]; then
  pick heroicons/24/outline "$per_set" orig/heroicons-outline
  pick phosphor/assets/thin "$per_set" orig/phosphor-thin
  pick phosphor/assets/duotone "$per_set" orig/phosphor-duotone
  pick octicons/build/svg "$per_set" orig/octicons
  pick remixicon/icons "$per_set" orig/remixicon
fi
echo "icons: $(find orig -name '*.svg' | wc -l) ($([ "$held_out" = 1 ] && echo held-out || echo tuning) sample)"

start=$(date +%s.%N)
node_modules/.bin/svgo --quiet -r -f orig -o svgo_out
end=$(date +%s.%N)
echo "svgo ${SVGO_VERSION} default preset, whole sample: $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s"

cd "$repo"
cargo run --release --quiet --no-default-features --example compact_vs_svgo -- \
  --original "$work/orig" --svgo "$work/svgo_out" "${extra[@]}"
