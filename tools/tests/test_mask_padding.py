"""Mask padding bits (negpatch-v1.md section 4, negpatch-hdf5.md): the unused bits of a
mask's last byte must be zero. For every count % 8 = r in 1..7 and every padding bit
position p in r..7, a patch whose last mask byte has bit p set in place of a set bit (so
the popcount still matches) is refused by `negpatch verify` and `export` and by the
reference readers, in both formats. The edit is resealed (zstd frame, part checksums and
offsets, index checksum; the HDF5 integrity block), so the padding check itself is what
must catch it: a check shifted by one position lets p = r through, and the update of
element c (one past the block) would be written."""

from __future__ import annotations

import contextlib
import os
import struct
from collections import OrderedDict

import h5py
import numpy as np
import pytest
import xxhash
import zstandard

import hdf5_reader as hr
import patch_reader as pr
import safetensors_np as st
from cases import read_index, replace_part
from conftest import assert_error

BLOCK = 64


#: Every (r, p): a mask of count % 8 = r elements with padding bit p of its last byte set.
CASES = [(r, p) for r in range(1, 8) for p in range(r, 8)]


def _write_set(folder):
    """A base and two fine-tuned copies with one tensor per case, of 64 + 8 + r elements:
    its last block (8 + r elements) is half nonzero, so its mask is stored as a zstd
    bitmask (neither dense nor Rice-coded)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(19)
    base, ft1, ft2 = OrderedDict(), OrderedDict(), OrderedDict()
    for r, p in CASES:
        c = BLOCK + 8 + r
        b = rng.uniform(-1, 1, c).astype(np.float32)
        agree = np.arange(c) % 2 == 0
        base[f"w{r}_{p}"] = ("F32", (c,), b)
        ft1[f"w{r}_{p}"] = ("F32", (c,), b + np.float32(0.5))
        ft2[f"w{r}_{p}"] = ("F32", (c,), b + np.where(agree, np.float32(0.5), np.float32(-0.5)))
    paths = [os.path.join(folder, f) for f in ("base.safetensors", "ft_1.safetensors", "ft_2.safetensors")]
    for path, tensors in zip(paths, (base, ft1, ft2)):
        st.save_file(path, tensors)
    return paths


@pytest.fixture(scope="module")
def padded(cli, workdir):
    folder = os.path.join(str(workdir), "mask-padding")
    base, *fts = _write_set(folder)
    neg = os.path.join(folder, "p.negpatch")
    h5 = os.path.join(folder, "p.h5")
    cli.ok("merge", "--base", base, *fts, "-o", neg, "--block-size", str(BLOCK), "-q")
    cli.ok("convert", neg, h5)
    return folder, base, neg, h5


def _dirty(mask: np.ndarray, c: int, p: int) -> np.ndarray:
    """``mask`` (bytes of a c-element mask) with its highest set bit cleared and padding
    bit p of the last byte set: the same popcount, dirty padding."""
    bits = np.unpackbits(mask, bitorder="little")
    assert not bits[c:].any() and bits[:c].any()
    bits[np.flatnonzero(bits[:c])[-1]] = 0
    bits[(len(mask) - 1) * 8 + p] = 1
    return np.packbits(bits, bitorder="little")


def _negpatch_case(neg, cases, out):
    """A copy of ``neg`` with the last mask of the tensor of each (r, p) in ``cases``
    dirtied at padding bit p."""
    data = open(neg, "rb").read()
    for r, p in cases:
        index = read_index(data)
        ti = next(i for i, t in enumerate(index["tensors"]) if t["name"] == f"w{r}_{p}")
        block = index["tensors"][ti]["blocks"][1]
        assert block["encoding"] == "sparse" and "mask_codec" not in block, block
        part = block["mask"]
        raw = zstandard.ZstdDecompressor().decompress(data[part["offset"]:part["offset"] + part["length"]])
        dirty = _dirty(np.frombuffer(raw, np.uint8).copy(), 8 + r, p)
        frame = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True).compress(dirty.tobytes())
        data = replace_part(data, ti, 1, "mask", frame)
    with open(out, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def _sealed_edit(path):
    with h5py.File(path, "r+") as f:
        yield f
    data = bytearray(open(path, "rb").read())
    data[8:32] = struct.pack("<IIQQ", 1, 0, len(data), xxhash.xxh64(bytes(data[512:])).intdigest())
    with open(path, "wb") as fh:
        fh.write(data)


def _hdf5_case(h5, cases, out):
    with open(h5, "rb") as src, open(out, "wb") as dst:
        dst.write(src.read())
    with _sealed_edit(out) as f:
        groups = {g.attrs["name"]: g for g in f["tensors"].values()}
        for r, p in cases:
            group = groups[f"w{r}_{p}"]
            group["mask"][...] = _dirty(group["mask"][...], BLOCK + 8 + r, p)


def test_clean_patches_decode_to_the_merge(padded):
    _, _, neg, h5 = padded
    for patch in (pr.read_patch(neg), hr.read_patch(h5)):
        for r, p in CASES:
            tau = patch.tensors[f"w{r}_{p}"]
            assert np.array_equal(tau != 0, np.arange(BLOCK + 8 + r) % 2 == 0)


@pytest.mark.parametrize("fmt", ["negpatch", "h5"])
def test_every_set_padding_bit_is_refused(cli, padded, fmt):
    """One patch with every case in its own tensor: verify lists each damaged block (a
    check shifted by one misses the seven with p = r); export and apply refuse it. The
    reference reader refuses it, and each of those seven alone."""
    folder, base, neg, h5 = padded
    make = _negpatch_case if fmt == "negpatch" else _hdf5_case
    source = neg if fmt == "negpatch" else h5
    bad = os.path.join(folder, f"pad-all.{fmt}")
    make(source, CASES, bad)
    r = cli.run("verify", bad)
    assert r.returncode == 1, r.describe()
    flagged = {line.split("tensor '")[1].split("'")[0] for line in r.stdout.splitlines()
               if line.startswith("  ! ") and "block 1: mask padding bits are set" in line}
    assert flagged == {f"w{r}_{p}" for r, p in CASES}, r.describe()
    out = os.path.join(folder, f"pad-all-{fmt}.safetensors")
    assert_error(cli.run("export", bad, "-o", out), bad, "'w1_1'", "block 1", "mask padding bits are set")
    assert_error(cli.run("apply", "--base", base, "--patch", bad, "-o", out), bad, "mask padding bits are set")
    assert not os.path.exists(out)
    reader = pr if fmt == "negpatch" else hr
    with pytest.raises(reader.PatchError, match="padding"):
        reader.read_patch(bad)
    for case in [(r, p) for r, p in CASES if p == r]:
        one = os.path.join(folder, f"pad-{case[0]}-{case[1]}.{fmt}")
        make(source, [case], one)
        with pytest.raises(reader.PatchError, match="padding"):
            reader.read_patch(one)
        os.remove(one)
