#!/usr/bin/env python3
"""PyTorch peer timing for `examples/sd_lora_train.rs` (never run in CI).

One LoRA training step of the diffusers UNet with peft adapters, as svgen's trainer does it with
cached latents: draw noise and timesteps, `DDPMScheduler.add_noise`, UNet forward, MSE, backward,
`clip_grad_norm_`, `torch.optim.AdamW` step. Prints the median step time over `--steps` steps
(after `--warmup` untimed steps).

Usage:
  /work/venv/bin/python tools/sd_lora_bench.py --model svgen-train/tests/fixtures/sd/tiny-sd \
      --batch 4 --resolution 64 --rank 4 --steps 40
"""

import argparse
import os
import statistics
import time

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from peft import LoraConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(args.model, "unet")).float()
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    sched = DDPMScheduler.from_pretrained(os.path.join(args.model, "scheduler"))
    lat = args.resolution // 8
    c, d = unet.config.in_channels, unet.config.cross_attention_dim
    x0 = torch.randn(args.batch, c, lat, lat)
    ehs = torch.randn(args.batch, 77, d)
    times = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,))
        noisy = sched.add_noise(x0, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=ehs).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    n = sum(p.numel() for p in params)
    print(f"torch {torch.__version__}, {args.threads} threads, {n} LoRA params: "
          f"median step {statistics.median(times) * 1e3:.2f} ms "
          f"({args.batch / statistics.median(times):.1f} images/s)")


if __name__ == "__main__":
    main()
