#!/usr/bin/env python3
"""PyTorch CPU counterpart of `cargo bench --bench llama`, of
`cargo run --release --example llama_perf -- decode` and of `llama_perf train-speed` (same
config, same thread count).

    /work/venv/bin/python tools/llama_bench/bench_torch.py            # criterion-style figures
    /work/venv/bin/python tools/llama_bench/bench_torch.py --decode-only --rounds 200 --run 128
    /work/venv/bin/python tools/llama_bench/bench_torch.py --train-speed --seq 2048 --steps 5 \
        --threads 2 --checkpointing          # one RESULT line, as `llama_perf train-speed`

`--train-speed` times LoRA steps as the Rust trainer runs them: forward with SDPA attention,
the masked LM loss, backward, gradient-norm clipping at 1.0 and `torch.optim.AdamW` over the
adapters (lr 1e-4), after one warm-up step; `--checkpointing` turns on HF gradient
checkpointing (non-reentrant, per decoder layer). `tools/llama_bench/compare.py` drives both
sides in alternating runs.

Config: 4 layers, hidden 512, 8 heads / 4 kv heads, intermediate 1408, vocab 8192, tied
embeddings; LoRA r=16 (alpha 32) on all seven linears via peft; training sequence 512, batch 1
(forward + backward of the masked LM loss, as the Rust bench); decode latency of one token with
the KV cache at positions 64, 256 and 1024. Prints medians.
"""

import argparse
import os
import resource
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicCache

SEQ = 512


def median_time(fn, n, warmup=2):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def decode_interleaved(model, cfg, positions, rounds, run):
    """As `llama_perf decode`: one token at each position, positions in turn, round after
    round; then the mean per token of `run` consecutive tokens from each position."""
    caches = {}
    with torch.no_grad():
        for pos in positions:
            prefix = (torch.arange(pos) * 7919 % 8192).unsqueeze(0)
            cache = DynamicCache(config=cfg)
            model(input_ids=prefix, past_key_values=cache, use_cache=True)
            caches[pos] = cache

        def fresh(pos):
            c = DynamicCache(config=cfg)
            for i, layer in enumerate(caches[pos].layers):
                c.update(layer.keys.clone(), layer.values.clone(), i)
            return c

        def one(pos):
            c = fresh(pos)
            t0 = time.perf_counter()
            model(input_ids=torch.tensor([[1]]), past_key_values=c, use_cache=True,
                  position_ids=torch.tensor([[pos]]))
            return time.perf_counter() - t0

        def many(pos):
            c = fresh(pos)
            t0 = time.perf_counter()
            for i in range(run):
                tok = (pos + i) * 7919 % 8192
                model(input_ids=torch.tensor([[tok]]), past_key_values=c, use_cache=True,
                      position_ids=torch.tensor([[pos + i]]))
            return (time.perf_counter() - t0) / run

        for pos in positions:
            for _ in range(3):
                one(pos)
        single = {p: [] for p in positions}
        for _ in range(rounds):
            for pos in positions:
                single[pos].append(one(pos))
        run_rounds = max(rounds // 20, 3)
        amortised = {p: [] for p in positions}
        if run > 0:
            for _ in range(run_rounds):
                for pos in positions:
                    amortised[pos].append(many(pos))
    print(f"decode, 1 token at each position ({rounds} rounds, positions in turn); "
          f"then mean per token over {run} tokens ({run_rounds} rounds)")
    print("position  median ms  p10 ms  p90 ms  vs first  | run median ms/token  vs first")
    first = first_run = None
    for pos in positions:
        ts = sorted(single[pos])
        m = ts[len(ts) // 2]
        first = first or m
        p10, p90 = ts[round((len(ts) - 1) * 0.1)], ts[round((len(ts) - 1) * 0.9)]
        if amortised[pos]:
            r = statistics.median(amortised[pos])
            first_run = first_run or r
            run_col = f"{r * 1e3:.3f}  {(r / first_run - 1) * 100:+.1f}%"
        else:
            run_col = "-"
        print(f"{pos:8}  {m * 1e3:9.3f}  {p10 * 1e3:6.3f}  {p90 * 1e3:6.3f}  "
              f"{(m / first - 1) * 100:+7.1f}%  | {run_col}")


def bench_config(max_positions=4096):
    return LlamaConfig(vocab_size=8192, hidden_size=512, intermediate_size=1408, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=4, rms_norm_eps=1e-5,
                       max_position_embeddings=max_positions, tie_word_embeddings=True,
                       rope_parameters={"rope_type": "default", "rope_theta": 500000.0})


def train_speed(seq, steps, checkpointing, r):
    """One RESULT line: LoRA steps (forward, backward, clip, AdamW) at `seq` tokens, batch 1."""
    cfg = bench_config(max_positions=32768)
    cfg._attn_implementation = "sdpa"
    base = LlamaForCausalLM(cfg).float()
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                            "gate_proj", "up_proj", "down_proj"]))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids = (torch.arange(seq) * 7919 % 8192).unsqueeze(0)

    def step():
        out = model(input_ids=ids, labels=ids)
        loss = out.loss.item()  # the Rust trainer reads the loss before backward, too
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    step()  # warm-up
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    times.sort()
    median = times[len(times) // 2]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    load = os.getloadavg()[0]
    print(f"RESULT side=torch seq={seq} steps={steps} tokens_per_s={seq / median:.1f} "
          f"median_step_s={median:.4f} min_step_s={times[0]:.4f} max_step_s={times[-1]:.4f} "
          f"wall_s={wall:.2f} cpu_s={cpu:.2f} peak_rss_mib={peak_mib:.1f} "
          f"threads={torch.get_num_threads()} load={load:.2f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--decode-only", action="store_true",
                    help="only the interleaved decode measurement of `llama_perf decode`")
    ap.add_argument("--positions", default="64,256,1024")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--run", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--train-speed", action="store_true",
                    help="only the LoRA training-step timing of `llama_perf train-speed`")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--checkpointing", action="store_true")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    if args.train_speed:
        train_speed(args.seq, args.steps, args.checkpointing, args.r)
        return
    print("torch", torch.__version__, "threads", torch.get_num_threads())
    cfg = bench_config()
    if args.decode_only:
        model = LlamaForCausalLM(cfg).float().eval()
        positions = [int(p) for p in args.positions.split(",")]
        decode_interleaved(model, cfg, positions, args.rounds, args.run)
        return
    base = LlamaForCausalLM(cfg).float()
    ids = (torch.arange(SEQ) * 7919 % 8192).unsqueeze(0)
    peft_model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"]))
    peft_model.train()

    def step():
        out = peft_model(input_ids=ids, labels=ids)
        out.loss.backward()
        peft_model.zero_grad(set_to_none=True)

    t = median_time(step, 10)
    print(f"train lora_step_seq512: median {t * 1e3:.1f} ms, {SEQ / t:.0f} tokens/s")

    model = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for pos in (64, 256, 1024):
            prefix = (torch.arange(pos) * 7919 % 8192).unsqueeze(0)
            cache = DynamicCache(config=cfg)
            model(input_ids=prefix, past_key_values=cache, use_cache=True)
            nxt = torch.tensor([[1]])

            def dec():
                c = DynamicCache(config=cfg)
                # Fresh copy of the prefix cache each time, as the Rust bench clones its cache.
                for i, layer in enumerate(cache.layers):
                    c.update(layer.keys.clone(), layer.values.clone(), i)
                t0 = time.perf_counter()
                model(input_ids=nxt, past_key_values=c, use_cache=True,
                      position_ids=torch.tensor([[pos]]))
                return time.perf_counter() - t0

            for _ in range(3):
                dec()
            ts = [dec() for _ in range(30)]
            m = statistics.median(ts)
            print(f"decode token_at_pos_{pos}: median {m * 1e3:.2f} ms, {1 / m:.0f} tokens/s")


if __name__ == "__main__":
    main()
