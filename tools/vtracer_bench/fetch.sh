#!/usr/bin/env bash
# Fetches the real icon sets used by the trace benchmarks (nothing is committed):
#   * @tabler/icons 3.52.0 (MIT): outline icons, rasterised in black for the batch benchmark;
#   * @twemoji/svg 15.0.0 (graphics CC-BY 4.0): flat colour emoji for the colour/vtracer table.
# Usage: tools/vtracer_bench/fetch.sh [DIR]   (default: target/trace-bench-data)
# Prints the two SVG directories. Needs `npm` (npm pack talks only to the npm registry).
set -euo pipefail
dir="${1:-target/trace-bench-data}"
mkdir -p "$dir"
cd "$dir"
fetch() { # package@version subdir
  if [ ! -d "$2" ]; then
    tgz=$(npm pack --silent "$1")
    mkdir -p "$2"
    tar -xzf "$tgz" -C "$2"
    rm -f "$tgz"
  fi
}
fetch @tabler/icons@3.52.0 tabler
fetch @twemoji/svg@15.0.0 twemoji
echo "$PWD/tabler/package/icons/outline"
echo "$PWD/twemoji/package"
