#!/usr/bin/env python3
"""The thesis-style Python pipeline as a speed peer for svgen-data's CPU stages.

For each PNG: PIL decode -> grey -> dark-border check and invert (numpy) -> threshold 0.5 ->
PBM -> the real `potrace -s` binary (Debian potrace 1.16) -> tiktoken cl100k count ->
label -> one zstd Parquet file with pyarrow. Same work as `cargo bench --bench data`.

Inputs: the `image` column of an svgen-data shard (e.g. the default job at --size 512), so
both sides trace the same 44 rasters. Runs with 1 and 2 worker processes and prints
triplets/s (median of --repeat runs).

Usage:
  cargo run --release --example build_dataset -- --fresh --size 512 --out /tmp/svgen512
  /work/venv/bin/python tools/data_bench/peer_pipeline.py /tmp/svgen512 --repeat 5
"""
import argparse
import glob
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tiktoken
from PIL import Image

ENC = None
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def offline_tiktoken_cache():
    """No network here: seed tiktoken's cache with the cl100k file tiktoken-rs ships (tiktoken
    checks its sha256 against the official hash when loading, so it is the same vocabulary)."""
    import hashlib
    import shutil
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return
    src = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/tiktoken-rs-*/assets/cl100k_base.tiktoken")))
    if not src:
        return
    cache = os.path.join(tempfile.gettempdir(), "svgen-tiktoken-cache")
    os.makedirs(cache, exist_ok=True)
    dst = os.path.join(cache, hashlib.sha1(CL100K_URL.encode()).hexdigest())
    if not os.path.exists(dst):
        shutil.copy(src[-1], dst)
    os.environ["TIKTOKEN_CACHE_DIR"] = cache


def work(item):
    global ENC
    if ENC is None:
        ENC = tiktoken.get_encoding("cl100k_base")
    rid, png = item
    im = Image.open(io.BytesIO(png)).convert("RGB")
    a = np.asarray(im, dtype=np.float32).mean(axis=2) / 255.0
    ring = max(1, round(min(a.shape) * 0.02))
    border = np.concatenate([a[:ring].ravel(), a[-ring:].ravel(), a[:, :ring].ravel(), a[:, -ring:].ravel()])
    if np.median(border) < 0.5 and (border < 0.5).mean() >= 0.6:
        a = 1.0 - a
    black = a <= 0.5
    h, w = black.shape
    pbm = b"P4\n%d %d\n" % (w, h) + np.packbits(black, axis=1).tobytes()
    svg = subprocess.run(["potrace", "-s", "-o", "-", "-"], input=pbm, capture_output=True, check=True).stdout.decode()
    n = len(ENC.encode(svg, disallowed_special=()))
    return rid, png, w, h, svg, n, "positive" if n < 8000 else "negative"


def run_once(items, procs, out_dir):
    t0 = time.perf_counter()
    if procs == 1:
        rows = [work(i) for i in items]
    else:
        with Pool(procs) as p:
            rows = p.map(work, items, chunksize=2)
    cols = list(zip(*rows))
    table = pa.table({
        "id": cols[0], "image": pa.array(cols[1], pa.binary()), "width": pa.array(cols[2], pa.int32()),
        "height": pa.array(cols[3], pa.int32()), "svg": cols[4], "n_tokens": pa.array(cols[5], pa.int32()),
        "label": cols[6],
    })
    pq.write_table(table, os.path.join(out_dir, "peer.parquet"), compression="zstd")
    return time.perf_counter() - t0


def main():
    offline_tiktoken_cache()
    ap = argparse.ArgumentParser()
    ap.add_argument("shards")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.shards, "*.parquet")))
    t = pa.concat_tables([pq.read_table(f, columns=["id", "image"]) for f in files])
    items = list(zip(t.column("id").to_pylist(), t.column("image").to_pylist()))
    print(f"{len(items)} images, {Image.open(io.BytesIO(items[0][1])).size} px")
    with tempfile.TemporaryDirectory() as d:
        work(items[0])  # warm tiktoken in this process
        for procs in (1, 2):
            times = [run_once(items, procs, d) for _ in range(args.repeat)]
            med = statistics.median(times)
            print(f"peer python+potrace, {procs} process(es): median {med:.3f} s = {len(items) / med:.2f} triplets/s")


if __name__ == "__main__":
    sys.exit(main())
