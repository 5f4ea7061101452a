#!/usr/bin/env python3
"""diffusers UNet2DConditionModel step time on PyTorch CPU, at the configuration of `benches/sd.rs`.

    /work/venv/bin/python tools/sd_bench/bench_torch.py [--threads 2] [--iters 10]

The config below must stay identical to `UNET_CONFIG` / `LATENT` / `BATCH` / `TOKENS` in
benches/sd.rs: an SD1.5-shaped UNet (same blocks, heads, 768-d cross-attention, 2 layers per block,
32 GroupNorm groups) at one fifth of SD1.5's widths, on 32x32 latents (256 px images), batch 2
(a classifier-free-guidance pair), 77 text tokens. Weights are random (timing does not depend on
them); fp32, no_grad, default attention processor (SDPA). Also the tiny test fixture's UNet
(svgen-train/tests/fixtures/sd/tiny-sd/unet) on 64x64 latents, batch 2, 77 tokens, as
`unet_step_tiny` in benches/sd.rs. Prints the medians and all timings.
"""
import os
import argparse
import statistics
import time

import torch
from diffusers import UNet2DConditionModel

UNET_CONFIG = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(64, 128, 256, 256),
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=768,
    norm_num_groups=32,
)
LATENT = 32
BATCH = 2
TOKENS = 77


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
TINY = os.path.join(ROOT, "svgen-train", "tests", "fixtures", "sd", "tiny-sd", "unet")


def time_unet(name, unet, latent, ctx_dim, args):
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(BATCH, 4, latent, latent, generator=g)
    t = torch.tensor([999.0] * BATCH)
    ehs = torch.randn(BATCH, TOKENS, ctx_dim, generator=g)
    times = []
    with torch.no_grad():
        for i in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            out = unet(sample, t, encoder_hidden_states=ehs).sample
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times.append(dt)
    assert out.shape == sample.shape
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"{name} ({n_params / 1e6:.2f}M params, B={BATCH}, {latent}x{latent} latents, {TOKENS} tokens): "
          f"median {statistics.median(times) * 1e3:.1f} ms")
    print("  all (ms):", " ".join(f"{x * 1e3:.1f}" for x in times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    time_unet("unet_step_b2_32x32_sd15_fifth_width", UNet2DConditionModel(**UNET_CONFIG).eval(), LATENT, 768, args)
    time_unet("unet_step_b2_64x64_tiny_sd_fixture", UNet2DConditionModel.from_pretrained(TINY).eval(), 64, 32, args)


if __name__ == "__main__":
    main()
