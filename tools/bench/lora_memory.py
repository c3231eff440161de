#!/usr/bin/env python3
"""Merging n LoRA adapters against n full fine-tuned checkpoints of the same model.

    .venv/bin/python tools/bench/lora_memory.py [--params 40000000] [--n 10] [--rank 16]

Generates (cached in tools/bench/work/) a Llama-shaped float32 base, n fine-tuned copies,
and n PEFT LoRA adapters of rank r on every attention and MLP projection (A_k, B_k share a
common part, so their updates agree in sign where a real run's would); then runs
`negpatch merge --method negmerge` on the n checkpoints and on the n adapters and prints,
for each, the input bytes, the peak anonymous memory (RssAnon sampled every 2 ms), the
wall time and the patch size. The release CLI must be built.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import OrderedDict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tools", "reference"))

import bench  # noqa: E402
import gen_checkpoints  # noqa: E402
import lora_ref  # noqa: E402
import safetensors_np as st  # noqa: E402

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def adapters(folder, base_path, n, rank, seed=0):
    base, _ = st.load_checkpoint(base_path)
    rng = np.random.default_rng(seed)
    shared = {}
    paths = []
    for k in range(n):
        path = os.path.join(folder, f"lora_{k + 1}")
        paths.append(path)
        if os.path.exists(os.path.join(path, "adapter_model.safetensors")):
            continue
        modules = OrderedDict()
        for name, (dtype, shape, _) in base.items():
            module = name[:-len(".weight")]
            if not name.endswith(".weight") or module.rsplit(".", 1)[-1] not in PROJECTIONS:
                continue
            out_features, in_features = shape
            if module not in shared:
                shared[module] = (rng.standard_normal((rank, in_features)).astype(np.float32) * 0.02,
                                  rng.standard_normal((out_features, rank)).astype(np.float32) * 0.02)
            a0, b0 = shared[module]
            modules[module] = ((a0 + rng.standard_normal(a0.shape).astype(np.float32) * 0.004).astype(np.float32),
                               (b0 + rng.standard_normal(b0.shape).astype(np.float32) * 0.004).astype(np.float32))
        lora_ref.write_adapter(path, modules, r=rank, alpha=2 * rank)
    return paths


def size_of(paths):
    return sum(os.path.getsize(f) for f in bench.files_of(paths)) if all(os.path.isfile(p) for p in paths) else \
        sum(os.path.getsize(os.path.join(p, f)) for p in paths for f in os.listdir(p))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=int, default=40_000_000)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--rank", type=int, default=16)
    args = ap.parse_args()
    binary = os.path.join(REPO, ".build", "release", "negpatch")
    work = os.path.join(REPO, "tools", "bench", "work", f"lora-{args.params}-{args.n}-r{args.rank}")
    os.makedirs(work, exist_ok=True)
    info = gen_checkpoints.generate(os.path.join(work, "full"), n=args.n, params=args.params, dtype="F32",
                                    consensus=0.07, seed=1) \
        if not os.path.exists(os.path.join(work, "full", f"ft_{args.n}.safetensors")) else \
        {"base": os.path.join(work, "full", "base.safetensors"),
         "fts": [os.path.join(work, "full", f"ft_{k + 1}.safetensors") for k in range(args.n)]}
    loras = adapters(os.path.join(work, "adapters"), info["base"], args.n, args.rank)
    rows = []
    for label, inputs in (("full checkpoints", info["fts"]), ("LoRA adapters", loras)):
        out = os.path.join(work, label.split()[0] + ".negpatch")
        seconds, peak_kb = bench.best([binary, "merge", "--base", info["base"], *inputs, "-o", out, "--quiet"], repeat=2)
        rows.append((label, size_of(inputs), peak_kb, seconds, os.path.getsize(out)))
    print(f"negmerge of n = {args.n} inputs, base {bench.mb(os.path.getsize(info['base']))} "
          f"({args.params:,} float32 parameters), LoRA rank {args.rank} on {', '.join(PROJECTIONS)}")
    print("| inputs | input bytes | peak anonymous memory | merge time | patch |")
    print("| --- | --- | --- | --- | --- |")
    for label, size, peak, seconds, patch in rows:
        print(f"| {args.n} {label} | {bench.mb(size)} | {peak / 1024:.1f} MB | {seconds:.2f} s | {bench.mb(patch)} |")


if __name__ == "__main__":
    main()
