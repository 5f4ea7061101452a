#!/usr/bin/env bash
# Side-by-side timing of svgen-trace (release `trace_pbm` example) against `potrace -s`, as whole
# processes on the same PBM files, plus peak memory from /usr/bin/time -v.
#
#   tools/trace_bench/run.sh [OUTDIR]        (default OUTDIR: target/trace_bench)
#
# Needs: potrace, hyperfine, /usr/bin/time (Debian: potrace hyperfine time) and a Python with
# numpy + Pillow for the inputs (PYTHON, default /work/venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/trace_bench}
PY=${PYTHON:-/work/venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
[ -f "$OUT/silhouette-3000.pbm" ] && [ -f "$OUT/text-2480x1600.pbm" ] || "$PY" tools/trace_bench/make_inputs.py "$OUT"
cargo build --release --example trace_pbm --no-default-features --features trace
BIN=target/release/examples/trace_pbm
echo "machine: $(nproc) cores, $(uname -m); potrace: $(potrace --version | head -1)"
for f in silhouette-3000 text-2480x1600; do
  IN="$OUT/$f.pbm"
  # Same output from both (the comparison is meaningless otherwise).
  potrace -s "$IN" -o "$OUT/$f.potrace.svg"
  "$BIN" "$IN" "$OUT/$f.svgen.svg"
  if cmp -s <(sed -n '/<g /,$p' "$OUT/$f.potrace.svg") <(sed -n '/<g /,$p' "$OUT/$f.svgen.svg"); then
    echo "$f: drawing identical to potrace's"
  else
    echo "$f: drawing differs from potrace's (see $OUT/$f.*.svg)"
  fi
  hyperfine --warmup 2 --runs 10 --export-markdown "$OUT/$f.md" \
    -n "potrace -s" "potrace -s '$IN' -o /dev/null" \
    -n "svgen 1 thread" "$BIN '$IN' /dev/null --threads 1" \
    -n "svgen $(nproc) threads" "$BIN '$IN' /dev/null"
  for cmd in "potrace -s $IN -o /dev/null" "$BIN $IN /dev/null --threads 1" "$BIN $IN /dev/null"; do
    rss=$(/usr/bin/time -v $cmd 2>&1 >/dev/null | awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}')
    echo "peak RSS ${rss} KiB: $cmd"
  done
done
