#!/usr/bin/env python3
"""diffusers side of compare.py: text-to-image wall time of a diffusers folder (Stable Diffusion
or FLUX, read from model_index.json) on the CPU, the same work as `examples/diffusion_speed.rs`.

Each run is the whole pipeline call (prompt encoding, denoising, VAE decoding to a uint8 numpy
image), loading excluded, after --warmup untimed runs. Stable Diffusion: DDIM, guidance 7.5;
FLUX: schnell settings (guidance unused) with T5 limit --max-sequence-length. Prints one JSON line
{"side": "diffusers", "family", ..., "times": [seconds...]}.
"""
import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", default="minimal a lighthouse with clean outlines, flat fills")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--max-sequence-length", type=int, default=64)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, required=True)
    a = ap.parse_args()

    import torch
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    from diffusers import DDIMScheduler, FluxPipeline, StableDiffusionPipeline

    with open(os.path.join(a.model, "model_index.json")) as f:
        family = "flux" if json.load(f)["_class_name"] == "FluxPipeline" else "sd"
    if family == "flux":
        pipe = FluxPipeline.from_pretrained(a.model, torch_dtype=torch.float32)
        kwargs = dict(guidance_scale=0.0, max_sequence_length=a.max_sequence_length)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(
            a.model, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        kwargs = dict(guidance_scale=a.guidance)
    pipe.set_progress_bar_config(disable=True)

    def run(seed):
        g = torch.Generator("cpu").manual_seed(seed)
        with torch.inference_mode():
            out = pipe(a.prompt, num_inference_steps=a.steps, width=a.width, height=a.height,
                       num_images_per_prompt=a.batch, generator=g, output_type="np", **kwargs)
        # The uint8 conversion svgen's side does too.
        images = (out.images * 255).round().clip(0, 255).astype("uint8")
        return len(images)

    for i in range(a.warmup):
        run(i)
    times = []
    for i in range(a.runs):
        t = time.perf_counter()
        n = run(1000 + i)
        times.append(time.perf_counter() - t)
        assert n == a.batch, (n, a.batch)
    print(json.dumps(dict(side="diffusers", family=family, steps=a.steps, width=a.width,
                          height=a.height, batch=a.batch, threads=a.threads, times=times)))


if __name__ == "__main__":
    main()
