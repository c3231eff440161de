#!/usr/bin/env python3
"""Regenerates the golden files in formats/golden/.

Inputs are small deterministic checkpoints (a base and three fine-tuned copies, covering
F32, BF16, F16 and F64 tensors, a scalar, an empty tensor, an integer buffer and several
64-element blocks). The patch is written by the negpatch CLI; the dense task vector beside
it is computed by the independent NumPy reference (tools/reference), not by NegPatch, so the
Swift tests that decode the patch and compare with it check the reader against the spec.

Run after an intended format change (or a version bump, which changes the `tool` field):
    .venv/bin/python tools/make_golden.py [path/to/negpatch]
"""
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
from safetensors_np import from_f32, load_checkpoint, save_file, to_f32  # noqa: E402
import merge_ref  # noqa: E402

OUT = os.path.join(ROOT, "formats", "golden")
SHAPES = [("blocks.0.attn.weight", "F32", (6, 40)), ("blocks.0.attn.bias", "BF16", (40,)),
          ("blocks.1.mlp.weight", "F16", (3, 50)), ("blocks.1.mlp.scale", "F64", ()),
          ("blocks.1.unused", "F32", (0,))]


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, ".build", "debug", "negpatch")
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(2025)
    base = {}
    for name, dtype, shape in SHAPES:
        base[name] = (dtype, shape, from_f32(dtype, rng.standard_normal(shape).astype(np.float32)))
    base["position_ids"] = ("I64", (4,), np.arange(4, dtype=np.int64))
    save_file(os.path.join(OUT, "base.safetensors"), base, {"format": "pt"})
    agree = {name: rng.random(shape) < 0.4 for name, _, shape in SHAPES}
    for k in range(1, 4):
        ft = {}
        for name, dtype, shape in SHAPES:
            b = to_f32(dtype, base[name][2])
            delta = np.where(agree[name], 0.05 + 0.01 * k, rng.standard_normal(shape) * 0.05).astype(np.float32)
            ft[name] = (dtype, shape, from_f32(dtype, (b + delta).astype(np.float32)))
        ft["position_ids"] = base["position_ids"]
        save_file(os.path.join(OUT, f"ft_{k}.safetensors"), ft, {"format": "pt"})
    patch = os.path.join(OUT, "golden.negpatch")
    subprocess.run([binary, "merge", "--base", os.path.join(OUT, "base.safetensors")]
                   + [os.path.join(OUT, f"ft_{k}.safetensors") for k in range(1, 4)]
                   + ["-o", patch, "--block-size", "64", "--lambda", "0.8", "-q"], check=True)
    b, _ = load_checkpoint(os.path.join(OUT, "base.safetensors"))
    fts = [load_checkpoint(os.path.join(OUT, f"ft_{k}.safetensors"))[0] for k in range(1, 4)]
    tau = merge_ref.merge_checkpoints(b, fts)
    save_file(os.path.join(OUT, "golden.tau.safetensors"),
              {name: ("F32", v.shape, np.ascontiguousarray(v, dtype=np.float32)) for name, v in tau.items()})
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
