#!/usr/bin/env bash
# GPU checks of svgen-train on a machine with an NVIDIA GPU and CUDA (issue 12; issue 19 item 8
# extends this script). From the repository root:
#
#     tools/gpu_check.sh            # STEPS=3 timed LoRA steps per run by default
#
# 1. Builds llama_perf and the CUDA parity tests with `--features cuda` (release).
# 2. Runs the parity tests (svgen-train/tests/cuda_parity.rs): logits against transformers,
#    flash attention against the CPU kernel, LoRA gradients with and without checkpointing
#    against Flex, a bf16 base with f32 adapters. Any failure makes the script exit non-zero.
# 3. Trains random-weight Llamas of the Llama 3.2 1B and Llama 3 8B shapes (bf16 base, LoRA
#    r = 16 on all seven linears, batch 1, activation checkpointing) for a few steps at
#    T = 2048 and 8192, and prints tokens/s and the peak GPU memory (nvidia-smi, sampled every
#    100 ms, minus the idle level before the run) against the prediction of
#    `llama_perf train-memory --dry-run` (svgen_train::llama::memory).
#
# 4. Runs `examples/gpu_check.rs` once per check, each in its own process so nvidia-smi's peak
#    belongs to it: `llm` (bf16 forward and 20 cached decode tokens of the small bench Llama
#    against f32 on Flex), `lora` (one `Autodiff<Cuda>` LoRA step with a bf16 base against f32
#    on `Autodiff<Flex>`), `sd` (one UNet step at 256 px against Flex), with timings and peak GPU
#    memory. A parity failure of any makes the script exit non-zero. (`cargo run --release
#    --example gpu_check -- llm lora sd` runs the same checks on the CPU, Flex against Flex.)
#
# Kernels compile on first use (NVRTC); cubecl.toml at the repository root keeps the compiled
# kernels and autotune results under target/ so a second run of this script skips that.
#
# Figures and logs go to $GPU_CHECK_OUT (default target/gpu_check). The runs take about a minute
# each on an H100-class GPU; the first build of the CUDA backend takes a few minutes more.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
OUT="${GPU_CHECK_OUT:-target/gpu_check}"
STEPS="${STEPS:-3}"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"
mkdir -p "$OUT"
start=$(date +%s)
elapsed() { echo "[$(($(date +%s) - start)) s]"; }
fail=0

if ! command -v nvidia-smi >/dev/null; then
    echo "gpu_check: nvidia-smi not found; this script needs an NVIDIA GPU" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "== build (release, --features cuda) $(elapsed)"
cargo build --release --features cuda --example llama_perf || exit 1
cargo build --release --features cuda --example gpu_check || exit 1
cargo test --release -p svgen-train --features cuda --test cuda_parity --no-run || exit 1
BIN="$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/llama_perf"
[ -x "$BIN" ] || BIN="$ROOT/target/release/examples/llama_perf"
CHECK_BIN="$(dirname "$BIN")/gpu_check"

# Peak GPU memory (MiB above the idle level) of one command, sampled every 100 ms.
# Usage: with_gpu_peak TAG COMMAND...; sets $status and $peak_mib; the log is $OUT/run_TAG.log.
with_gpu_peak() {
    local tag="$1"
    shift
    local idle
    idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | head -1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 \
        > "$OUT/mem_$tag.txt" &
    local smi=$!
    timeout "$RUN_TIMEOUT" "$@" 2>&1 | tee "$OUT/run_$tag.log"
    status=${PIPESTATUS[0]}
    kill "$smi" 2>/dev/null
    wait "$smi" 2>/dev/null
    peak_mib=$(($(sort -n "$OUT/mem_$tag.txt" | tail -1) - idle))
}

echo "== parity tests $(elapsed)"
cargo test --release -p svgen-train --features cuda --test cuda_parity -- --nocapture \
    --test-threads 1 2>&1 | tee "$OUT/parity.log"
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
    echo "gpu_check: PARITY FAILURE (see $OUT/parity.log)"
    fail=1
fi

echo "== model checks: bf16 forward + 20 cached tokens, bf16 LoRA step, SD UNet step $(elapsed)"
checks="$OUT/checks.md"
{
    echo "| check | parity | timings (s; decode in ms/token) | peak GPU MiB |"
    echo "|---|---|---|---|"
} > "$checks"
for check in llm lora sd; do
    with_gpu_peak "check_$check" "$CHECK_BIN" --device default "$check"
    result=$(grep '^RESULT' "$OUT/run_check_$check.log" | tail -1)
    parity=$(echo "$result" | tr ' ' '\n' | awk -F= '$1=="parity" {print $2}')
    times=$(echo "$result" | tr ' ' '\n' | grep -E '_(s|token)=' | tr '\n' ' ')
    if [ "$status" -ne 0 ] || [ "$parity" != "ok" ]; then
        echo "gpu_check: check $check FAILED (status $status, parity ${parity:-none})"
        fail=1
    fi
    echo "| $check | ${parity:-error} | $times | $peak_mib |" >> "$checks"
    echo "$check: parity ${parity:-error}, peak GPU $peak_mib MiB above idle $(elapsed)"
done

echo "== LoRA training at 1B and 8B shapes $(elapsed)"
table="$OUT/training.md"
{
    echo "| model | T | tokens/s (median step) | step s | peak GPU MiB | predicted MiB | measured / predicted |"
    echo "|---|---|---|---|---|---|---|"
} > "$table"
for model in llama3.2-1b llama3-8b; do
    config="tools/llama_bench/configs/$model.json"
    for seq in 2048 8192; do
        tag="${model}_T${seq}"
        predicted=$("$BIN" train-memory --config "$config" --seq "$seq" --dtype bf16 \
            --checkpointing --dry-run | awk '/total \(predicted peak\)/ {print $4}')
        idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | head -1)
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 \
            > "$OUT/mem_$tag.txt" &
        smi=$!
        timeout "$RUN_TIMEOUT" "$BIN" train-speed --device default --config "$config" \
            --seq "$seq" --steps "$STEPS" --dtype bf16 --checkpointing 2>&1 | tee "$OUT/run_$tag.log"
        status=${PIPESTATUS[0]}
        kill "$smi" 2>/dev/null
        wait "$smi" 2>/dev/null
        peak=$(sort -n "$OUT/mem_$tag.txt" | tail -1)
        used=$((peak - idle))
        result=$(grep '^RESULT' "$OUT/run_$tag.log" | tail -1)
        tps=$(echo "$result" | tr ' ' '\n' | awk -F= '$1=="tokens_per_s" {print $2}')
        step=$(echo "$result" | tr ' ' '\n' | awk -F= '$1=="median_step_s" {print $2}')
        if [ "$status" -ne 0 ] || [ -z "$tps" ]; then
            echo "gpu_check: training run $tag failed (status $status)"
            fail=1
            tps="failed"
        fi
        ratio=$(python3 -c "print(f'{$used / $predicted:.2f}')" 2>/dev/null || echo "?")
        echo "| $model | $seq | $tps | $step | $used | $predicted | $ratio |" >> "$table"
        echo "$tag: $tps tokens/s, peak GPU $used MiB above idle, predicted $predicted MiB $(elapsed)"
    done
done

echo
cat "$checks"
echo
cat "$table"
echo "gpu_check finished in $(($(date +%s) - start)) s; parity and runs: $([ $fail -eq 0 ] && echo OK || echo FAILED)"
exit $fail
