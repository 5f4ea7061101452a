#!/usr/bin/env bash
# svgen-trace (release `trace` example) against `potrace -s`, as whole processes on the same
# files, as a new user would run them.
#
#   tools/trace_bench/run.sh [OUTDIR]        (default OUTDIR: target/trace_bench)
#   RUNS=15 tools/trace_bench/run.sh         (timed runs of each command; default 9, at least 7)
#
# For every input it first checks that both write the same SVG (the whole file, except the
# three-line <metadata> block in which potrace names itself), then times the commands in
# alternating runs (potrace, svgen 1 thread, svgen 2 threads, potrace, ...) with
# tools/trace_bench/alternate.py: median and spread of the wall time, CPU time (user + sys) and
# peak RSS, and the load average. potrace is single-threaded, so the headline is svgen with
# --threads 1; 2 threads is an extra row. On a loaded machine compare the CPU times.
#
# Inputs (tools/trace_bench/make_inputs.py): the 3000x3000 silhouette and the 2480x1600 text
# page (PBM), a page of display glyphs that nothing was tuned on (PBM, and PNG through the
# generic image path, timed against potrace on the same pixels as PGM), and the silhouette as
# PNG (against potrace on the PBM).
#
# Needs: potrace and /usr/bin/time (Debian: potrace time), Python 3, and numpy + Pillow for the
# inputs (PYTHON, default /work/venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/trace_bench}
RUNS=${RUNS:-9}
PY=${PYTHON:-/work/venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
for f in silhouette-3000.pbm silhouette-3000.png text-2480x1600.pbm glyphs-2400x3000.pbm \
  glyphs-2400x3000.png glyphs-2400x3000.pgm; do
  [ -f "$OUT/$f" ] || { "$PY" tools/trace_bench/make_inputs.py "$OUT"; break; }
done
# Build, and time a private copy of the binary (a shared target dir may be rebuilt meanwhile).
BUILT=$(cargo build --release --example trace --no-default-features --features trace \
  --message-format=json | python3 -c 'import json, sys
for m in map(json.loads, sys.stdin):
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "trace" and m.get("executable"):
        print(m["executable"])')
BIN="$OUT/trace"
cp "$BUILT" "$BIN"

REPORT="$OUT/report.md"
{
  echo "# svgen trace vs potrace -s ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -m);" \
    "$(potrace --version | head -1); load average $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
} > "$REPORT"

# input for svgen, input for potrace, title
CASES=(
  "silhouette-3000.pbm silhouette-3000.pbm silhouette 3000x3000 (PBM)"
  "text-2480x1600.pbm text-2480x1600.pbm text page 2480x1600 (PBM)"
  "glyphs-2400x3000.pbm glyphs-2400x3000.pbm glyph page 2400x3000, untuned (PBM)"
  "glyphs-2400x3000.png glyphs-2400x3000.pgm glyph page 2400x3000, untuned (svgen: grey PNG through image; potrace: the same pixels as PGM)"
  "silhouette-3000.png silhouette-3000.pbm silhouette 3000x3000 (svgen: 1-bit PNG through image; potrace: PBM)"
)
for c in "${CASES[@]}"; do
  read -r ours theirs title <<< "$c"
  # Same output from both (the comparison is meaningless otherwise).
  potrace -s "$OUT/$theirs" -o "$OUT/$theirs.potrace.svg"
  "$BIN" "$OUT/$ours" "$OUT/$ours.svgen.svg" --threads 1
  if cmp -s <(grep -v -e '^<metadata>$' -e '^Created by potrace' -e '^</metadata>$' \
      "$OUT/$theirs.potrace.svg") "$OUT/$ours.svgen.svg"; then
    same="identical to potrace's apart from its <metadata> comment"
  else
    same="DIFFERS from potrace's (see $OUT/$ours.svgen.svg, $OUT/$theirs.potrace.svg)"
  fi
  echo "$title: SVG $same"
  python3 tools/trace_bench/alternate.py --runs "$RUNS" --title "$title" --markdown "$REPORT" \
    "potrace -s=potrace -s $OUT/$theirs -o /dev/null" \
    "svgen --threads 1=$BIN $OUT/$ours /dev/null --threads 1" \
    "svgen --threads 2=$BIN $OUT/$ours /dev/null --threads 2"
  echo "SVG output: $same." >> "$REPORT"
  echo >> "$REPORT"
done
echo "Report: $REPORT"
