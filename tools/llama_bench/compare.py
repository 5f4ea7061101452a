#!/usr/bin/env python3
"""LoRA training speed, svgen (Burn, Flex CPU backend) against PyTorch + peft, in alternating runs.

Both sides train the bench model of `benches/llama.rs` (4 layers, hidden 512, 8 heads / 4 kv
heads, intermediate 1408, vocab 8192, tied embeddings, random weights) with LoRA r = 16 on all
seven linears, batch 1, every token labelled, one optimiser step per sequence: forward, masked
LM loss, backward, gradient-norm clipping at 1.0 and AdamW over the adapters. PyTorch uses SDPA
attention; svgen its flash-attention op and chunked LM-head loss. At T >= --checkpointing-from
(2048 by default) both sides recompute activations per decoder layer (HF gradient checkpointing,
non-reentrant; svgen's `gradient_checkpointing`).

Each run is a fresh process pinned with `taskset -c CPUS`, with the same thread count on both
sides (`RAYON_NUM_THREADS` for svgen, `torch.set_num_threads` plus `OMP_NUM_THREADS` /
`MKL_NUM_THREADS` for PyTorch). The sides alternate run after run (svgen first on even runs,
PyTorch first on odd ones), so a change in machine load hits both alike. Per side it reports the
median tokens/s over runs (each run's figure is the median of its timed steps), the spread
(min–max over runs), CPU seconds per step (user + system: less sensitive to other processes
than wall time), the peak resident set and the 1-minute load average seen by the runs.

    cargo build --release --example llama_perf
    /work/venv/bin/python tools/llama_bench/compare.py --seqs 512,2048 --runs 5 --steps 5 \
        --threads 2 --cpus 0,1

On a shared machine, prefer the CPU-time column and rerun on an idle one for the wall-clock
ratio.
"""

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def parse_result(text):
    for line in text.splitlines():
        if line.startswith("RESULT "):
            return dict(kv.split("=", 1) for kv in line.split()[1:])
    raise RuntimeError("no RESULT line in:\n" + text[-2000:])


def run_side(side, seq, args, checkpointing):
    env = dict(os.environ)
    n = str(args.threads)
    env.update(RAYON_NUM_THREADS=n, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, PYTHONUNBUFFERED="1")
    pin = ["taskset", "-c", args.cpus] if args.cpus else []
    if side == "burn":
        cmd = pin + [str(args.rust_bin), "train-speed", "--seq", str(seq), "--steps",
                     str(args.steps), "--r", str(args.r)]
        if checkpointing:
            cmd.append("--checkpointing")
    else:
        cmd = pin + [args.python, str(ROOT / "tools/llama_bench/bench_torch.py"), "--train-speed",
                     "--seq", str(seq), "--steps", str(args.steps), "--threads", n, "--r",
                     str(args.r)]
        if checkpointing:
            cmd.append("--checkpointing")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return parse_result(out.stdout)


def summary(rows):
    tps = [float(r["tokens_per_s"]) for r in rows]
    cpu = [float(r["cpu_s"]) / int(r["steps"]) for r in rows]
    rss = [float(r["peak_rss_mib"]) for r in rows]
    load = [float(r["load"]) for r in rows]
    return {
        "tps": statistics.median(tps), "tps_min": min(tps), "tps_max": max(tps),
        "cpu": statistics.median(cpu), "rss": statistics.median(rss),
        "load_min": min(load), "load_max": max(load),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqs", default="512,2048")
    ap.add_argument("--runs", type=int, default=5, help="runs per side and length")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpus", default="0,1", help="taskset CPU list ('' to not pin)")
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--checkpointing-from", type=int, default=2048)
    ap.add_argument("--rust-bin", default=str(ROOT / "target/release/examples/llama_perf"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--timeout", type=int, default=3600)
    args = ap.parse_args()
    seqs = [int(s) for s in args.seqs.split(",")]
    results = {}
    for seq in seqs:
        ck = seq >= args.checkpointing_from
        rows = {"burn": [], "torch": []}
        for run in range(args.runs):
            order = ("burn", "torch") if run % 2 == 0 else ("torch", "burn")
            for side in order:
                r = run_side(side, seq, args, ck)
                rows[side].append(r)
                print(f"T={seq} run {run + 1}/{args.runs} {side}: {r['tokens_per_s']} tokens/s, "
                      f"cpu {float(r['cpu_s']) / int(r['steps']):.2f} s/step, "
                      f"peak RSS {r['peak_rss_mib']} MiB, load {r['load']}", flush=True)
        results[seq] = (ck, summary(rows["burn"]), summary(rows["torch"]))
    print()
    print(f"threads {args.threads}, CPUs {args.cpus or 'unpinned'}, {args.runs} runs × "
          f"{args.steps} timed steps per side and length, sides alternating")
    print("| T | checkpointing | svgen tokens/s (min–max) | PyTorch tokens/s (min–max) | ratio | "
          "svgen CPU s/step | PyTorch CPU s/step | CPU-time ratio | svgen peak RSS MiB | "
          "PyTorch peak RSS MiB | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seq, (ck, b, t) in results.items():
        print(f"| {seq} | {'both' if ck else 'off'} | {b['tps']:.0f} ({b['tps_min']:.0f}–"
              f"{b['tps_max']:.0f}) | {t['tps']:.0f} ({t['tps_min']:.0f}–{t['tps_max']:.0f}) | "
              f"{b['tps'] / t['tps']:.2f}× | {b['cpu']:.2f} | {t['cpu']:.2f} | "
              f"{t['cpu'] / b['cpu']:.2f}× | {b['rss']:.0f} | {t['rss']:.0f} | "
              f"{min(b['load_min'], t['load_min']):.1f}–{max(b['load_max'], t['load_max']):.1f} |")


if __name__ == "__main__":
    main()
