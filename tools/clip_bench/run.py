#!/usr/bin/env python3
"""CLIP vision forward speed: svgen-eval (Burn, Flex CPU) vs PyTorch CPU (transformers), same run.

ViT-B/32 shape (transformers' CLIPVisionConfig defaults), random weights, batch 8 at 224 px,
vision tower + visual projection (`CLIPModel.get_image_features`). PyTorch runs with
torch.set_num_threads(N) (N = --threads, default 2 = the CI box). Burn's number comes from
`cargo bench --bench clip` (criterion median); PyTorch's is the median of --iters timed runs
after warm-up.

    /work/venv/bin/python tools/clip_bench/run.py [--threads 2] [--iters 15] [--skip-rust]
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch
from transformers import CLIPConfig, CLIPModel

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH_ID = "clip_vision_vit_b32_batch8_224"


def torch_images_per_s(threads, iters):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig()).eval()  # ViT-B/32 shapes, random weights
    px = torch.randn(8, 3, 224, 224)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model.get_image_features(pixel_values=px)
        for _ in range(iters):
            t0 = time.perf_counter()
            model.get_image_features(pixel_values=px)
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return 8 / med, med


def rust_images_per_s(skip, profile):
    if not skip:
        cmd = ["cargo", "bench", "-p", "svgen", "--no-default-features", "--features", "eval", "--bench", "clip"]
        if profile:
            # e.g. `dev`: the workspace builds every dependency (Burn, Flex) at opt-level 3 there too
            cmd += ["--profile", profile]
        subprocess.check_call(cmd + ["--", BENCH_ID], cwd=ROOT)
    est = os.path.join(ROOT, "target", "criterion", "clip", BENCH_ID, "new", "estimates.json")
    with open(est) as f:
        med_ns = json.load(f)["median"]["point_estimate"]
    return 8 / (med_ns * 1e-9), med_ns * 1e-9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--skip-rust", action="store_true", help="reuse the last criterion result")
    ap.add_argument("--cargo-profile", default=None, help="cargo profile for the Burn side (default: bench)")
    a = ap.parse_args()
    r_ips, r_s = rust_images_per_s(a.skip_rust, a.cargo_profile)
    t_ips, t_s = torch_images_per_s(a.threads, a.iters)
    print(f"torch {torch.__version__} CPU threads={a.threads}: {t_s*1e3:.1f} ms/batch, {t_ips:.2f} images/s")
    print(f"svgen-eval Burn Flex:                {r_s*1e3:.1f} ms/batch, {r_ips:.2f} images/s")
    print(f"ratio Burn/PyTorch (images/s): {r_ips / t_ips:.2f}x")


if __name__ == "__main__":
    main()
