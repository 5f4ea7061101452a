#!/usr/bin/env python3
"""svgen (Burn) vs diffusers text-to-image speed on the CPU, same threads, alternating runs.

Drives `examples/diffusion_speed.rs` (build it first: `cargo build --release --example
diffusion_speed`) and `bench_diffusers.py` on one diffusers folder (tiny SD or tiny FLUX by
default). Each round starts a fresh process per side, pinned with `taskset -c CPUS` when --cpus is
given, with the same thread count on both sides (RAYON_NUM_THREADS for svgen, torch.set_num_threads
plus OMP/MKL_NUM_THREADS for PyTorch); the side that goes first alternates between rounds. Every
process does --warmup untimed and --runs timed generations. Prints per side the median, the
interquartile range, min and max over all timed runs, and the ratio diffusers / svgen (> 1: svgen
faster); --json writes everything.

    python tools/diffusion_bench/compare.py --threads 2 --cpus 0,1 --rounds 5 --runs 5 \\
        --model svgen-train/tests/fixtures/flux/tiny-flux --model svgen-train/tests/fixtures/sd/tiny-sd
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def quartiles(xs):
    xs = sorted(xs)
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def run_side(cmd, env, cpus):
    if cpus:
        cmd = ["taskset", "-c", cpus] + cmd
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append",
                    help="diffusers folder (repeatable; default: tiny FLUX and tiny SD)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="square side in pixels")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--max-sequence-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpus", default=None, help="taskset CPU list, e.g. 0,1")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--python", default=os.environ.get("PYTHON", "/work/venv/bin/python"))
    ap.add_argument("--svgen-bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "examples",
        "diffusion_speed"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    models = a.model or ["svgen-train/tests/fixtures/flux/tiny-flux",
                         "svgen-train/tests/fixtures/sd/tiny-sd"]
    n = str(a.threads)
    env = dict(os.environ, RAYON_NUM_THREADS=n, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n,
               PYTHONUNBUFFERED="1")
    common = ["--steps", str(a.steps), "--width", str(a.size), "--height", str(a.size),
              "--batch", str(a.batch), "--max-sequence-length", str(a.max_sequence_length),
              "--warmup", str(a.warmup), "--runs", str(a.runs)]
    print(f"threads {a.threads}, CPUs {a.cpus or 'unpinned'}, {a.rounds} rounds x {a.runs} runs, "
          f"{a.steps} steps, {a.size}x{a.size}, batch {a.batch}")
    report = []
    for model in models:
        sides = {
            "svgen": [a.svgen_bin, "--model", model] + common,
            "diffusers": [a.python, os.path.join(ROOT, "tools/diffusion_bench/bench_diffusers.py"),
                          "--model", model, "--threads", n] + common,
        }
        times = {"svgen": [], "diffusers": []}
        family = None
        for r in range(a.rounds):
            order = ["svgen", "diffusers"] if r % 2 == 0 else ["diffusers", "svgen"]
            for side in order:
                res = run_side(sides[side], env, a.cpus)
                family = res["family"]
                times[side] += res["times"]
        row = {"model": model, "family": family}
        for side, ts in times.items():
            q1, q3 = quartiles(ts)
            row[side] = dict(median=statistics.median(ts), q1=q1, q3=q3, min=min(ts), max=max(ts),
                             n=len(ts), times=ts)
        row["ratio"] = row["diffusers"]["median"] / row["svgen"]["median"]
        report.append(row)
        print(f"\n{model} ({family})")
        print("| side | median s | IQR s | min s | max s | n |")
        print("|---|---|---|---|---|---|")
        for side in ("svgen", "diffusers"):
            s = row[side]
            print(f"| {side} | {s['median']:.4f} | {s['q1']:.4f}-{s['q3']:.4f} | {s['min']:.4f} "
                  f"| {s['max']:.4f} | {s['n']} |")
        print(f"diffusers / svgen = {row['ratio']:.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
