#!/usr/bin/env python3
"""Peer figures for svgen-core's criterion bench (`cargo bench --no-default-features --bench core`),
on the same 44 Tabler icons (svgen-data/assets/tabler-icons):

* Python `tiktoken` cl100k_base: tokens/s on one thread (`encode` loop) and with `encode_batch`
  (its own thread pool), plus the total token count (must equal `svg_tokens`' TOTAL);
* CairoSVG (Python, cairo): in-process render time per icon to a 256 px PNG (the closest
  in-process peer installable here);
* `rsvg-convert` (librsvg, Debian `librsvg2-bin`): wall time per icon at 256 px, one process per
  icon, with the time of the same call on an empty SVG reported separately (process start-up).

The BPE ranks come from the tiktoken-rs crate's bundled copy (sha256-checked), so no network is
needed. Usage (from the repository root; needs `pip install tiktoken cairosvg`):

    /work/venv/bin/python tools/core_bench/peers.py
"""
import glob
import os
import statistics
import subprocess
import tempfile
import time

import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public

ICONS = sorted(glob.glob("svgen-data/assets/tabler-icons/**/*.svg", recursive=True))


def cl100k():
    local = sorted(glob.glob(os.path.expanduser(
        "~/.cargo/registry/src/*/tiktoken-rs-0.12.*/assets/cl100k_base.tiktoken")))[-1]
    real = tiktoken.load.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda _u, expected_hash=None: real(local, expected_hash)
    p = openai_public.cl100k_base()
    return tiktoken.Encoding(p["name"], pat_str=p["pat_str"], mergeable_ranks=p["mergeable_ranks"],
                             special_tokens=p["special_tokens"])


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    texts = [open(p, encoding="utf-8").read() for p in ICONS]
    enc = cl100k()
    total = sum(len(enc.encode(t, disallowed_special=())) for t in texts)
    print(f"icons: {len(texts)}, cl100k tokens: {total}")
    t1 = median_time(lambda: [enc.encode(t, disallowed_special=()) for t in texts], 50)
    tb = median_time(lambda: enc.encode_batch(texts, disallowed_special=()), 50)
    print(f"tiktoken encode loop: {t1 * 1e3:.3f} ms = {total / t1 / 1e6:.2f} M tokens/s")
    print(f"tiktoken encode_batch: {tb * 1e3:.3f} ms = {total / tb / 1e6:.2f} M tokens/s")

    try:
        import cairosvg

        data = [t.encode() for t in texts]
        tc = median_time(lambda: [cairosvg.svg2png(bytestring=b, output_width=256,
                                                   output_height=256, background_color="white")
                                  for b in data], 10)
        print(f"cairosvg 256px: {tc / len(data) * 1e3:.3f} ms/icon")
    except ImportError:
        print("cairosvg not installed (pip install cairosvg): skipped")

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "out.png")
        empty = os.path.join(d, "empty.svg")
        with open(empty, "w") as f:
            f.write('<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>')
        run = lambda p: subprocess.run(["rsvg-convert", "-w", "256", "-h", "256", "-b", "white",
                                        "-o", out, p], check=True)
        startup = median_time(lambda: run(empty), 20)
        per_icon = median_time(lambda: [run(p) for p in ICONS], 5) / len(ICONS)
        print(f"rsvg-convert 256px: {per_icon * 1e3:.3f} ms/icon wall "
              f"(of which process start-up on an empty SVG: {startup * 1e3:.3f} ms)")


if __name__ == "__main__":
    main()
