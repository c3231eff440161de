"""Lossy values (`merge --values f16|bf16|int8`): the patch is marked lossy, each stored
value is the float32 reference value rounded as negpatch-v1.md section 4 says, and the
recorded max_abs_error per tensor is the largest rounding error, computed here in NumPy."""

from __future__ import annotations

import os

import numpy as np
import pytest

import patch_reader as pr
import safetensors_np as st
from safetensors_np import bf16_to_f32, f32_to_bf16

BLOCK = 4096


def rounded(tau: np.ndarray, value_type: str) -> np.ndarray:
    """The stored value of every element of a reference task vector."""
    flat = tau.reshape(-1).astype(np.float32)
    if value_type == "f16":
        return flat.astype(np.float16).astype(np.float32)
    if value_type == "bf16":
        return bf16_to_f32(f32_to_bf16(flat))
    out = np.zeros_like(flat)
    # int8: one scale per block, over the values the block stores (its nonzeros for a
    # sparse block; all its values for a dense one - the max |v| is the same either way).
    for lo in range(0, flat.size, BLOCK):
        seg = flat[lo:lo + BLOCK]
        scale = np.float32(np.max(np.abs(seg))) / np.float32(127) if seg.size else np.float32(0)
        if scale == 0:
            continue
        q = np.clip(np.rint(seg / scale), -127, 127).astype(np.float32)
        out[lo:lo + BLOCK] = q * scale
    return out


@pytest.mark.parametrize("value_type", ["f16", "bf16", "int8"])
def test_lossy_values_round_as_specified(cli, dataset, workdir, value_type):
    d = dataset("small")
    out = os.path.join(str(workdir), f"lossy-{value_type}.negpatch")
    cli.ok("merge", "--base", d.base, *d.fts, "-o", out, "--values", value_type,
           "--block-size", str(BLOCK), "-q")
    patch = pr.read_patch(out)
    assert patch.metadata["lossy"] is True
    reference = d.tau()
    for entry in patch.index["tensors"]:
        name = entry["name"]
        assert entry["value_type"] == value_type
        expected = rounded(reference[name], value_type)
        got = patch.tensors[name].reshape(-1)
        assert np.array_equal(got.view(np.uint32), (expected + np.float32(0)).view(np.uint32)), name
        error = float(np.max(np.abs(expected - reference[name].reshape(-1)))) if expected.size else 0.0
        assert entry["max_abs_error"] == pytest.approx(error, rel=1e-6, abs=0), name
    # The lossless patch of the same inputs is bigger.
    lossless = os.path.join(str(workdir), "lossy-reference.negpatch")
    cli.ok("merge", "--base", d.base, *d.fts, "-o", lossless, "--block-size", str(BLOCK), "-q")
    assert os.path.getsize(out) < os.path.getsize(lossless)
    # And it applies like any patch.
    applied = os.path.join(str(workdir), f"lossy-{value_type}.safetensors")
    cli.ok("apply", "--base", d.base, "--patch", out, "-o", applied, "-q")


def test_int8_rounds_ties_to_even(cli, workdir):
    """Fixed tie vectors: every v / scale below is exactly halfway between two integers
    (scale = 127/64 / 127 = 1/64), as happens with bfloat16 inputs. Half to even stores
    [127, 2, 0, -2, ...]; half away from zero would store [127, 3, 1, -2, ...]."""
    folder = os.path.join(str(workdir), "int8-ties")
    os.makedirs(folder, exist_ok=True)
    halves = np.array([127, 2.5, 0.5, -1.5, 1.5, -2.5, -0.5, 3.5, 126.5, -126.5, 4.5, -127], np.float32)
    want = np.array([127, 2, 0, -2, 2, -2, 0, 4, 126, -126, 4, -127], np.int8)
    assert np.array_equal(np.rint(halves).astype(np.int8), want)  # NumPy's rint is half to even
    base = os.path.join(folder, "base.safetensors")
    ft = os.path.join(folder, "ft.safetensors")
    st.save_file(base, {"w": ("F32", (halves.size,), np.zeros(halves.size, np.float32))})
    st.save_file(ft, {"w": ("F32", (halves.size,), halves / np.float32(64))})
    out = os.path.join(folder, "ties.negpatch")
    cli.ok("merge", "--base", base, ft, "-o", out, "--method", "task-arithmetic", "--values", "int8", "-q")
    patch = pr.read_patch(out)
    (block,) = patch.index["tensors"][0]["blocks"]
    assert block["scale"] == 1 / 64
    stored = np.round(patch.tensors["w"].reshape(-1) * 64).astype(np.int8)
    assert stored.tolist() == want.tolist()
    assert patch.index["tensors"][0]["max_abs_error"] == 0.5 / 64
