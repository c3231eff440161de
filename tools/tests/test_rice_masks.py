"""Sparse masks stored as Rice codes (negpatch-v1.md section 4): a low-density merge uses
them, the independent reader decodes them to the NumPy reference bit for bit, and the mask
comes within 5% of its entropy floor."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import gen_checkpoints
import merge_ref
import patch_reader as pr
import safetensors_np as st
from cases import read_index, replace_part
from conftest import assert_error


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


# ------------------------------------------------------------------------- block ends

RICE_BLOCK = 1024


def rice_encode(positions, k: int) -> bytes:
    """Rice codes of the gaps before ``positions`` (negpatch-v1.md section 4), written
    here from the spec: g >> k one-bits, a zero-bit, the low k bits of g; LSB first."""
    bits, previous = [], -1
    for p in positions:
        g = int(p) - previous - 1
        previous = int(p)
        bits += [1] * (g >> k) + [0] + [(g >> i) & 1 for i in range(k)]
    bits += [0] * (-len(bits) % 8)
    return np.packbits(np.array(bits, np.uint8), bitorder="little").tobytes()


@pytest.fixture(scope="module")
def block_ends(cli, workdir):
    """A merge whose Rice-coded blocks set the first and the last element of a full block
    (0, 1023) and of the partial block after it (1024, 1723), beside ~4% random bits."""
    folder = os.path.join(str(workdir), "rice-ends")
    os.makedirs(folder, exist_ok=True)
    count = RICE_BLOCK + 700
    rng = np.random.default_rng(23)
    keep = rng.random(count) < 0.04
    keep[[0, RICE_BLOCK - 1, RICE_BLOCK, count - 1]] = True
    base = rng.uniform(-1, 1, count).astype(np.float32)
    paths = [os.path.join(folder, f"{n}.safetensors") for n in ("base", "ft_1", "ft_2")]
    st.save_file(paths[0], {"w": ("F32", (count,), base)})
    for i, path in enumerate(paths[1:]):
        delta = np.where(keep, np.float32(0.125 * (i + 1)), np.float32(0.25 * (-1) ** i))
        st.save_file(path, {"w": ("F32", (count,), base + delta)})
    patch = os.path.join(folder, "p.negpatch")
    cli.ok("merge", "--base", paths[0], *paths[1:], "-o", patch, "--block-size", str(RICE_BLOCK), "-q")
    return folder, paths, patch, keep


def test_rice_masks_set_the_first_and_last_element_of_blocks(cli, block_ends):
    folder, paths, patch, keep = block_ends
    index = pr.read_patch(patch).index
    blocks = index["tensors"][0]["blocks"]
    assert [b.get("mask_codec") for b in blocks] == ["rice", "rice"], blocks
    base = st.load_checkpoint(paths[0])[0]
    fts = [st.load_checkpoint(p)[0] for p in paths[1:]]
    reference = merge_ref.merge_checkpoints(base, fts)["w"]
    assert np.array_equal(reference != 0, keep)
    assert np.array_equal(pr.read_patch(patch).tensors["w"].view(np.uint32), reference.view(np.uint32))
    # The CLI decodes the same blocks: export and apply, bit for bit.
    exported = os.path.join(folder, "tau.safetensors")
    cli.ok("export", patch, "-o", exported)
    assert np.array_equal(st.load_checkpoint(exported)[0]["w"][2].view(np.uint32), reference.view(np.uint32))
    applied = os.path.join(folder, "applied.safetensors")
    cli.ok("apply", "--base", paths[0], "--patch", patch, "--lambda", "1", "-o", applied, "-q")
    want = base["w"][2] - np.float32(1) * reference
    assert np.array_equal(st.load_checkpoint(applied)[0]["w"][2].view(np.uint32), want.view(np.uint32))
    cli.ok("verify", patch)


@pytest.mark.parametrize("block", [0, 1])
@pytest.mark.parametrize("defect", ["past_the_end", "trailing_byte"])
def test_rice_masks_past_the_block_end_are_refused(cli, block_ends, block, defect):
    """The last code of a block moved one element past its end (c), or followed by an
    extra byte; the part is resealed, so the Rice decoder's own checks must refuse it."""
    folder, paths, patch, keep = block_ends
    data = open(patch, "rb").read()
    entry = read_index(data)["tensors"][0]["blocks"][block]
    lo = block * RICE_BLOCK
    c = min(RICE_BLOCK, keep.size - lo)
    positions = np.flatnonzero(keep[lo:lo + c])
    stream = rice_encode(positions, entry["rice_k"])
    stored = data[entry["mask"]["offset"]:entry["mask"]["offset"] + entry["mask"]["length"]]
    assert stream == stored  # the encoder here agrees with the CLI's
    if defect == "past_the_end":
        positions[-1] = c
        stream = rice_encode(positions, entry["rice_k"])
        message = "Rice mask sets a bit past the block"
    else:
        stream += b"\x00"
        message = "Rice mask stream has bytes or bits after its last code"
    bad = os.path.join(folder, f"{defect}-{block}.negpatch")
    with open(bad, "wb") as f:
        f.write(replace_part(data, 0, block, "mask", stream, size=len(stream)))
    out = os.path.join(folder, f"{defect}-{block}.safetensors")
    assert_error(cli.run("export", bad, "-o", out), bad, "'w'", f"block {block}", message)
    assert not os.path.exists(out)
    assert_error(cli.run("apply", "--base", paths[0], "--patch", bad, "-o", out), bad, message)
    assert not os.path.exists(out)
    r = cli.run("verify", bad)
    assert r.returncode == 1 and message in r.stdout + r.stderr, r.describe()
    with pytest.raises(pr.PatchError, match="Rice mask"):
        pr.read_patch(bad)
