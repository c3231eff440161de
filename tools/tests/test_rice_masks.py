"""Sparse masks stored as Rice codes (negpatch-v1.md section 4): a low-density merge uses
them, the independent reader decodes them to the NumPy reference bit for bit, and the mask
comes within 5% of its entropy floor."""

from __future__ import annotations

import math
import os

import numpy as np

import gen_checkpoints
import merge_ref
import patch_reader as pr
import safetensors_np as st


def test_low_density_masks_are_rice_coded_near_entropy(cli, workdir):
    folder = os.path.join(str(workdir), "rice-set")
    info = gen_checkpoints.generate(folder, n=6, params=1_500_000, dtype="F32", consensus=0.05, seed=3)
    out = os.path.join(folder, "p.negpatch")
    cli.ok("merge", "--base", info["base"], *info["fts"], "-o", out, "-q")
    patch = pr.read_patch(out)
    base = st.load_checkpoint(info["base"])[0]
    fts = [st.load_checkpoint(p)[0] for p in info["fts"]]
    reference = merge_ref.merge_checkpoints(base, fts)
    rice_blocks = mask_bytes = 0
    floor = 0.0
    for entry in patch.index["tensors"]:
        name = entry["name"]
        got, want = patch.tensors[name], reference[name]
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), name
        for block in entry["blocks"]:
            if block.get("mask_codec") == "rice":
                rice_blocks += 1
            mask_bytes += block.get("mask", {}).get("length", 0)
        p = entry["nonzeros"] / entry["elements"] if entry["elements"] else 0
        if 0 < p < 1:
            floor += -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) * entry["elements"] / 8
    assert rice_blocks > 0
    assert mask_bytes <= 1.05 * floor + 64 * len(patch.index["tensors"]), (mask_bytes, floor)
