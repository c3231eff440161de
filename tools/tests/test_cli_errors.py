"""Errors: mismatched inputs, corrupted patches, malformed safetensors, usage errors.

Every case asserts: exit status 1 (usage: 2), never a signal, one stderr line starting
`negpatch: error:` that names the file (and tensor where relevant), and no output left
behind (an existing output file is not modified)."""

from __future__ import annotations

import json
import os
from collections import OrderedDict

import numpy as np
import pytest

import patch_reader as pr
import safetensors_np as st
from conftest import DirWatch, assert_error, clean, file_bytes, sentinel
from cases import MALFORMED_ERRORS, PAIR, index_mutations, malformed_safetensors_cases, rewrite_index

# ---------------------------------------------------------------------------- mismatched inputs


def _variant(tensors, kind):
    t = OrderedDict((k, (d, s, a)) for k, (d, s, a) in tensors.items())
    name = "model.layers.0.self_attn.k_proj.weight"
    d, s, a = t[name]
    if kind == "shape":
        t[name] = (d, (s[1], s[0]), a.reshape(s[1], s[0]))  # same bytes, transposed shape
    elif kind == "missing":
        name = "model.norm.weight"
        del t[name]
    elif kind == "dtype":
        t[name] = ("F16", s, a.astype(np.float16))
    elif kind == "extra":
        name = "model.extra_bias"
        t[name] = ("F32", (3,), np.ones(3, np.float32))
    elif kind == "int_dtype":
        name = "model.position_ids"
        d, s, a = t[name]
        t[name] = ("I32", s, a.astype(np.int32))
    return t, name


@pytest.mark.parametrize("kind", ["shape", "missing", "dtype", "extra", "int_dtype"])
def test_mismatched_input_is_refused(cli, dataset, workdir, kind):
    d = dataset("small")
    base, fts = d.load()
    bad_tensors, tensor = _variant(fts[1], kind)
    root = os.path.join(str(workdir), "mismatch")
    os.makedirs(root, exist_ok=True)
    bad = os.path.join(root, f"ft_{kind}_mismatch.safetensors")
    st.save_file(bad, bad_tensors, {"format": "pt"})
    out = os.path.join(root, f"{kind}.negpatch")
    clean(out)
    w = DirWatch(root)
    r = cli.run("merge", "--base", d.base, d.fts[0], bad, d.fts[2], "-o", out)
    assert_error(r, os.path.basename(bad), tensor,
                 (os.path.basename(d.base), os.path.basename(d.fts[0])))
    assert w.new() == [], f"a refused merge left {w.new()} behind"


def test_mismatched_input_does_not_modify_existing_output(cli, dataset, workdir):
    d = dataset("small")
    _, fts = d.load()
    root = os.path.join(str(workdir), "mismatch")
    os.makedirs(root, exist_ok=True)
    bad = os.path.join(root, "ft_missing2.safetensors")
    st.save_file(bad, _variant(fts[1], "missing")[0], {"format": "pt"})
    out = os.path.join(root, "existing.negpatch")
    content = sentinel(out)
    r = cli.run("merge", "--base", d.base, d.fts[0], bad, "-o", out)
    assert_error(r, os.path.basename(bad))
    assert file_bytes(out) == content


# ---------------------------------------------------------------------------- corrupted patches


def _corruptions(data: bytes):
    """name -> corrupted bytes: single flipped bytes in every region, truncations, extension."""
    size = len(data)
    off = int.from_bytes(data[size - 32:size - 24], "little")
    ln = int.from_bytes(data[size - 24:size - 16], "little")
    foot = size - 32
    pos = {
        "magic0": 0, "magic7": 7, "version": 8, "version_hi": 11, "flags": 12, "flags_hi": 15,
        "part_first": 16, "part_second": 17, "part_frame_header": 20,
        "part_middle": 16 + (off - 16) // 2, "part_quarter": 16 + (off - 16) // 4,
        "part_last": off - 1,
        "index_first": off, "index_middle": off + ln // 2, "index_last": off + ln - 1,
        "footer_offset": foot, "footer_offset_hi": foot + 7, "footer_length": foot + 8,
        "footer_length_hi": foot + 15, "footer_checksum": foot + 16, "footer_checksum_hi":
        foot + 23, "footer_magic": foot + 24, "footer_last": size - 1,
    }
    out = {}
    for name, p in pos.items():
        for x in (0x01, 0xFF):
            b = bytearray(data)
            b[p] ^= x
            out[f"flip_{name}_{x:02x}"] = bytes(b)
    # a spread of further positions through the parts
    for k in range(1, 12):
        p = 16 + (off - 16) * k // 12 + 3
        b = bytearray(data)
        b[p] ^= 0x04
        out[f"flip_part_{k}of12"] = bytes(b)
    cuts = {"empty": 0, "1": 1, "15": 15, "16": 16, "47": 47, "at_index": off,
            "mid_index": off + ln // 2, "at_footer": size - 32, "in_footer": size - 31,
            "last_byte": size - 1}
    for label, cut in cuts.items():
        out[f"truncate_{label}"] = data[:cut]
    out["append_byte"] = data + b"\0"
    out["append_footer"] = data + data[-32:]
    return out


@pytest.fixture(scope="module")
def small_patch(merged):
    m = merged("small")
    return m, file_bytes(m.patch)


@pytest.fixture(scope="module")
def blocked_patch(cli, dataset, workdir):
    """The small set merged with --block-size 1024: many blocks per tensor."""
    d = dataset("small")
    out = os.path.join(str(workdir), "patches", "small-b1024.negpatch")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if not os.path.exists(out):
        cli.ok("merge", "--base", d.base, *d.fts, "-o", out, "--block-size", "1024")
    return d, file_bytes(out)


_CORRUPT_NAMES = sorted(_corruptions(b"\0" * 4096))


@pytest.mark.parametrize("case", _CORRUPT_NAMES)
def test_corrupted_patch_is_refused(cli, small_patch, workdir, case):
    m, data = small_patch
    root = os.path.join(str(workdir), "corrupt")
    os.makedirs(root, exist_ok=True)
    bad = os.path.join(root, f"{case}.negpatch")
    with open(bad, "wb") as f:
        f.write(_corruptions(data)[case])
    with pytest.raises(pr.PatchError):
        pr.read_patch(bad)
    out = os.path.join(root, f"{case}.applied.safetensors")
    clean(out)
    w = DirWatch(root)
    r = cli.run("apply", "--base", m.data.base, "--patch", bad, "-o", out)
    assert_error(r, os.path.basename(bad))
    assert w.new() == [], f"apply of a corrupt patch left {w.new()} behind"
    out = os.path.join(root, f"{case}.tau.safetensors")
    content = sentinel(out)  # export onto an existing file: must stay untouched
    w = DirWatch(root)
    r = cli.run("export", bad, "-o", out)
    assert_error(r, os.path.basename(bad))
    assert file_bytes(out) == content, "export of a corrupt patch modified the existing output"
    assert w.new() == [], f"export of a corrupt patch left {w.new()} behind"
    clean(out)


def _first_multiblock_sparse(index):
    for i, t in enumerate(index["tensors"]):
        if len(t["blocks"]) >= 2 and t["blocks"][0]["encoding"] == "sparse":
            return i
    return None


@pytest.mark.parametrize("case", sorted(index_mutations()))
def test_resealed_invalid_index_is_refused(cli, blocked_patch, workdir, case):
    """The index is changed and its checksum recomputed: the semantic checks of section 6
    items 2-3 (not the checksum) must catch it."""
    import json
    _, data = blocked_patch
    size = len(data)
    off = int.from_bytes(data[size - 32:size - 24], "little")
    ln = int.from_bytes(data[size - 24:size - 16], "little")
    ti = _first_multiblock_sparse(json.loads(data[off:off + ln]))
    assert ti is not None, "the blocked patch has no tensor with 2+ blocks, block 0 sparse"
    root = os.path.join(str(workdir), "resealed")
    os.makedirs(root, exist_ok=True)
    bad = os.path.join(root, f"{case}.negpatch")
    with open(bad, "wb") as f:
        f.write(rewrite_index(data, index_mutations(ti)[case]))
    with pytest.raises(pr.PatchError):
        pr.read_patch(bad)
    out = os.path.join(root, f"{case}.tau.safetensors")
    clean(out)
    w = DirWatch(root)
    r = cli.run("export", bad, "-o", out)
    assert_error(r, os.path.basename(bad))
    assert w.new() == [], f"left {w.new()} behind"


def test_resealed_valid_index_is_accepted(cli, blocked_patch, workdir):
    """Control for the test above: re-sealing an unchanged index keeps the patch valid."""
    _, data = blocked_patch
    root = os.path.join(str(workdir), "resealed")
    os.makedirs(root, exist_ok=True)
    good = os.path.join(root, "unchanged.negpatch")
    with open(good, "wb") as f:
        f.write(rewrite_index(data, lambda i: None))
    pr.read_patch(good)
    out = os.path.join(root, "unchanged.tau.safetensors")
    clean(out)
    cli.ok("export", good, "-o", out)


# ---------------------------------------------------------------------------- malformed inputs


def _pair_set(root):
    """A base and two fine-tuned copies laid out as cases.PAIR."""
    paths = []
    for i, values in enumerate(([1, 2, 3, 4], [2, 3, 4, 5], [1.5, 2.5, 3.5, 4.5])):
        p = os.path.join(root, f"pair_{i}.safetensors")
        with open(p, "wb") as f:
            f.write(_pair_bytes(np.array(values, np.float32).tobytes()))
        paths.append(p)
    return paths


def _pair_bytes(data):
    header = json.dumps(PAIR).encode()
    return len(header).to_bytes(8, "little") + header + data


def test_the_pair_that_malformed_files_break_merges_cleanly(cli, workdir):
    root = os.path.join(str(workdir), "malformed")
    os.makedirs(root, exist_ok=True)
    base, ft1, ft2 = _pair_set(root)
    zeros = os.path.join(root, "pair_zeros.safetensors")
    with open(zeros, "wb") as f:
        f.write(_pair_bytes(bytes(16)))
    out = os.path.join(root, "pair.negpatch")
    for inputs in ([base, ft1, ft2], [base, ft1, zeros], [zeros, ft1, ft2]):
        clean(out)
        cli.ok("merge", "--base", inputs[0], *inputs[1:], "-o", out, "-q")


@pytest.mark.parametrize("role", ["ft", "base"])
@pytest.mark.parametrize("case", sorted(malformed_safetensors_cases()))
def test_malformed_safetensors_is_refused(cli, workdir, case, role):
    """Each case is the valid pair with one defect, merged with valid copies of the pair:
    the error must be the reader's message for that defect (a file let through would
    merge, or fail later for another reason)."""
    root = os.path.join(str(workdir), "malformed")
    os.makedirs(root, exist_ok=True)
    base, ft1, _ = _pair_set(root)
    bad = os.path.join(root, f"{case}.safetensors")
    with open(bad, "wb") as f:
        f.write(malformed_safetensors_cases()[case])
    out = os.path.join(root, f"{case}-{role}.negpatch")
    clean(out)
    w = DirWatch(root)
    if role == "ft":
        r = cli.run("merge", "--base", base, ft1, bad, "-o", out)
    else:
        r = cli.run("merge", "--base", bad, ft1, base, "-o", out)
    tensor, message = MALFORMED_ERRORS[case]
    line = assert_error(r, os.path.basename(bad), "not a valid safetensors file", message)
    if tensor is not None:
        assert f"tensor '{tensor}'" in line, line
    assert w.new() == [], f"left {w.new()} behind"


def test_malformed_base_for_apply_is_refused(cli, merged, workdir):
    m = merged("small")
    root = os.path.join(str(workdir), "malformed")
    os.makedirs(root, exist_ok=True)
    bad = os.path.join(root, "apply_base_invalid_json.safetensors")
    with open(bad, "wb") as f:
        f.write(malformed_safetensors_cases()["invalid_json"])
    out = os.path.join(root, "apply-out.safetensors")
    clean(out)
    r = cli.run("apply", "--base", bad, "--patch", m.patch, "-o", out)
    assert_error(r, os.path.basename(bad))
    assert not os.path.exists(out)


def test_missing_or_unreadable_patch(cli, workdir):
    root = os.path.join(str(workdir), "missing-patch")
    os.makedirs(os.path.join(root, "a-folder.negpatch"), exist_ok=True)
    for name in ("nope.negpatch", "a-folder.negpatch"):
        out = os.path.join(root, "out.safetensors")
        w = DirWatch(root)
        r = cli.run("export", os.path.join(root, name), "-o", out)
        assert_error(r, name)
        assert w.new() == []


def test_output_folder_does_not_exist(cli, dataset, workdir):
    d = dataset("small")
    out = os.path.join(str(workdir), "no-such-folder", "x.negpatch")
    r = cli.run("merge", "--base", d.base, *d.fts, "-o", out)
    assert_error(r, "no-such-folder")
    assert not os.path.exists(os.path.dirname(out))


def test_missing_input_file(cli, dataset, workdir):
    d = dataset("small")
    missing = os.path.join(str(workdir), "does-not-exist.safetensors")
    out = os.path.join(str(workdir), "missing.negpatch")
    clean(out)
    r = cli.run("merge", "--base", d.base, d.fts[0], missing, "-o", out)
    assert_error(r, "does-not-exist.safetensors")
    assert not os.path.exists(out)


def test_sharded_index_pointing_to_missing_shard(cli, dataset, workdir):
    import json
    import shutil
    d = dataset("BF16-sharded")
    root = os.path.join(str(workdir), "broken-shards")
    clean(root)
    bad = os.path.join(root, "ft_2")
    shutil.copytree(d.fts[1], bad)
    idx_path = os.path.join(bad, "model.safetensors.index.json")
    idx = json.load(open(idx_path))
    first = sorted(idx["weight_map"])[0]
    idx["weight_map"][first] = "model-00009-of-00009.safetensors"
    with open(idx_path, "w") as f:
        json.dump(idx, f)
    out = os.path.join(root, "p.negpatch")
    r = cli.run("merge", "--base", d.base, d.fts[0], bad, "-o", out)
    assert_error(r, ("model-00009-of-00009.safetensors", "ft_2"))
    assert not os.path.exists(out)


# ---------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("args", [
    ["frobnicate"],
    ["merge"],
    ["merge", "--base", "b.safetensors", "-o", "x.negpatch"],
    ["apply", "--patch", "p.negpatch", "-o", "out.safetensors"],
    ["apply", "--base", "b.safetensors", "--patch", "p.negpatch", "-o", "o", "--lambda", "abc"],
    ["export", "p.negpatch"],
    ["merge", "--base", "b", "f1", "f2", "-o", "x", "--no-such-option"],
], ids=["unknown-subcommand", "merge-no-args", "merge-no-inputs",
        "apply-no-base", "apply-bad-lambda", "export-no-output", "unknown-option"])
def test_usage_errors_exit_2(cli, workdir, args):
    r = cli.run(*args)
    assert r.returncode == 2, f"usage error must exit 2\n{r.describe()}"
