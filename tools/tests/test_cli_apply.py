"""`negpatch apply` against `apply_ref`, the base-fingerprint guard, and patches written by
the Python reference writer (the CLI as a reader of someone else's patches)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import merge_ref as mr
import patch_reader as pr
import patch_writer as pw
import safetensors_np as st
from conftest import (BIG_SETS, DirWatch, assert_error, clean, describe_mismatch,
                      file_bytes, sentinel)


def compare_checkpoint(base_path, out_path, taus, lam, direction="subtract"):
    """Every difference between the CLI's output and base - lam*tau (base + lam*tau for an
    adding patch), as a list of strings:
    file layout, header bytes, non-floating bytes, floating values bit for bit."""
    problems = []
    if os.path.isdir(base_path):
        if not os.path.isdir(out_path):
            return [f"{out_path}: expected a folder for folder base {base_path}"]
        want_files = sorted(os.listdir(base_path))
        got_files = sorted(os.listdir(out_path))
        if want_files != got_files:
            problems.append(f"output folder files {got_files} != base folder files {want_files}")
        idx = "model.safetensors.index.json"
        if os.path.exists(os.path.join(base_path, idx)) and \
                os.path.exists(os.path.join(out_path, idx)) and \
                file_bytes(os.path.join(base_path, idx)) != file_bytes(os.path.join(out_path, idx)):
            problems.append(f"{idx} differs from the base's")
        pairs = [(os.path.join(base_path, f), os.path.join(out_path, f))
                 for f in want_files if f.endswith(".safetensors")]
    else:
        if not os.path.isfile(out_path):
            return [f"{out_path}: expected a file for file base {base_path}"]
        pairs = [(base_path, out_path)]
    for bf, of in pairs:
        if not os.path.exists(of):
            problems.append(f"{of}: missing")
            continue
        bbytes, obytes = file_bytes(bf), file_bytes(of)
        if len(bbytes) != len(obytes):
            problems.append(f"{of}: {len(obytes)} bytes, base file has {len(bbytes)}")
            continue
        n = int.from_bytes(bbytes[:8], "little")
        if bbytes[:8 + n] != obytes[:8 + n]:
            problems.append(f"{of}: safetensors header differs from the base's")
            continue
        base_t, _ = st.read_file(bf)
        out_t, _ = st.read_file(of)
        for name, (dt, shape, barr) in base_t.items():
            oarr = out_t[name][2]
            if dt not in st.FLOAT_DTYPES:
                if barr.tobytes() != oarr.tobytes():
                    problems.append(f"{os.path.basename(of)}: non-floating tensor {name} ({dt}) "
                                    f"changed")
                continue
            if name not in taus:
                problems.append(f"{name}: floating tensor missing from the patch")
                continue
            exp = mr.apply_ref(dt, barr, taus[name], lam, direction)
            d = describe_mismatch(f"{os.path.basename(of)}: {name} ({dt}, lambda {lam})",
                                  oarr, exp)
            if d:
                problems.append(d)
    return problems


def _out_path(workdir, tag, base):
    d = os.path.join(str(workdir), "apply")
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, tag + ("" if os.path.isdir(base) else ".safetensors"))
    clean(p)
    return p


@pytest.mark.parametrize("lam", [None, "0.5", "0.6"],
                         ids=["patch-lambda", "lambda-0.5", "lambda-0.6"])
@pytest.mark.parametrize("key", BIG_SETS + ["misaligned"])
def test_apply_matches_reference(cli, merged, workdir, key, lam):
    """0.5 is exact; 0.6 is not a float, so lam * tau rounds (a fused multiply-add or a
    float64 product shows), and for F64 it tells a float64 lambda from a float32 one."""
    m = merged(key)
    taus = pr.read_patch(m.patch).tensors
    out = _out_path(workdir, f"{key}-{lam or 'default'}", m.data.base)
    args = ["apply", "--base", m.data.base, "--patch", m.patch, "-o", out]
    if lam is not None:
        args += ["--lambda", lam]
    w = DirWatch(os.path.dirname(out))
    cli.ok(*args)
    assert w.new() == [os.path.basename(out)], f"apply left {w.new()} (temp files?)"
    problems = compare_checkpoint(m.data.base, out, taus, lam or m.lam)
    assert not problems, "\n".join(problems[:10])
    clean(out)


def test_sharded_output_keeps_shard_names_and_index(cli, merged, workdir):
    m = merged("BF16-sharded")
    out = _out_path(workdir, "sharded-layout", m.data.base)
    cli.ok("apply", "--base", m.data.base, "--patch", m.patch, "-o", out)
    assert sorted(os.listdir(out)) == sorted(os.listdir(m.data.base))
    idx = "model.safetensors.index.json"
    assert file_bytes(os.path.join(out, idx)) == file_bytes(os.path.join(m.data.base, idx))
    assert len([f for f in os.listdir(out) if f.startswith("model-0000")]) == 3
    clean(out)


# ---------------------------------------------------------------------------- wrong base


@pytest.mark.parametrize("key", ["small", "BF16-sharded"])
def test_wrong_base_is_refused(cli, merged, workdir, key):
    m = merged(key)
    wrong = m.data.fts[0]
    out = _out_path(workdir, f"wrong-base-{key}", wrong)
    w = DirWatch(os.path.dirname(out))
    r = cli.run("apply", "--base", wrong, "--patch", m.patch, "-o", out)
    assert_error(r, ("fingerprint", "base"),
                 (os.path.basename(wrong), os.path.basename(m.patch)))
    assert w.new() == [], f"a refused apply left {w.new()} behind"


def test_wrong_base_does_not_modify_existing_output(cli, merged, workdir):
    m = merged("small")
    out = _out_path(workdir, "wrong-base-existing", m.data.base)
    content = sentinel(out)
    r = cli.run("apply", "--base", m.data.fts[0], "--patch", m.patch, "-o", out)
    assert_error(r, ("fingerprint", "base"))
    assert file_bytes(out) == content, "a refused apply modified an existing output file"
    clean(out)


@pytest.mark.parametrize("key", ["small", "BF16-sharded"])
def test_ignore_base_mismatch_applies_anyway(cli, merged, workdir, key):
    m = merged(key)
    wrong = m.data.fts[0]
    taus = pr.read_patch(m.patch).tensors
    out = _out_path(workdir, f"ignore-mismatch-{key}", wrong)
    cli.ok("apply", "--base", wrong, "--patch", m.patch, "-o", out, "--ignore-base-mismatch")
    problems = compare_checkpoint(wrong, out, taus, m.lam)
    assert not problems, "\n".join(problems[:10])
    clean(out)


# ---------------------------------------------------------------------------- other layouts


def test_folder_with_model_safetensors(cli, dataset, workdir):
    d = dataset("small")
    root = os.path.join(str(workdir), "folder-form")
    clean(root)
    paths = []
    for src in [d.base] + d.fts:
        folder = os.path.join(root, os.path.basename(src).replace(".safetensors", ""))
        os.makedirs(folder)
        shutil.copy(src, os.path.join(folder, "model.safetensors"))
        paths.append(folder)
    patch = os.path.join(root, "p.negpatch")
    cli.ok("merge", "--base", paths[0], *paths[1:], "-o", patch)
    p = pr.read_patch(patch)
    assert p.metadata["base"] == "base" and p.metadata["inputs"] == ["ft_1", "ft_2", "ft_3"]
    ref = d.tau()
    problems = [x for x in (describe_mismatch(n, p.tensors[n], e) for n, e in ref.items()) if x]
    assert not problems, "\n".join(problems[:10])
    out = os.path.join(root, "out")
    cli.ok("apply", "--base", paths[0], "--patch", patch, "-o", out)
    problems = compare_checkpoint(paths[0], out, p.tensors, "1.0")
    assert not problems, "\n".join(problems[:10])


# ---------------------------------------------------------------------------- foreign patches


@pytest.mark.parametrize("encoding,block", [("sparse", 64), ("dense", 4096), ("auto", 1024),
                                            ("sparse", 1 << 20)])
def test_cli_reads_reference_written_patches(cli, dataset, workdir, encoding, block):
    """A patch written by tools/reference/patch_writer.py (sorted keys, zstd level 3, other
    block sizes, dense tensors): export must decode it bit for bit and apply must use it."""
    d = dataset("small")
    taus = d.tau()
    md = pw.default_metadata(n=d.n, inputs=[os.path.basename(f) for f in d.fts],
                             base=os.path.basename(d.base), lam=0.5)
    root = os.path.join(str(workdir), "foreign")
    os.makedirs(root, exist_ok=True)
    patch = os.path.join(root, f"{encoding}-{block}.negpatch")
    pw.write_patch(patch, taus, pr.fingerprint(d.base), md, block_elements=block,
                   encoding=encoding)
    exp = pr.read_patch(patch).tensors
    out = os.path.join(root, f"{encoding}-{block}.tau.safetensors")
    clean(out)
    cli.ok("export", patch, "-o", out)
    got, _ = st.read_file(out)
    problems = [x for x in (describe_mismatch(n, got[n][2], t) if n in got else f"{n}: missing"
                            for n, t in exp.items()) if x]
    assert not problems, "\n".join(problems[:10])
    out2 = os.path.join(root, f"{encoding}-{block}.applied.safetensors")
    clean(out2)
    cli.ok("apply", "--base", d.base, "--patch", patch, "-o", out2)
    problems = compare_checkpoint(d.base, out2, exp, "0.5")
    assert not problems, "\n".join(problems[:10])


@pytest.mark.parametrize("mode", ["no_checksum", "no_content_size", "two_frames"])
def test_cli_rejects_frames_breaking_section_4(cli, dataset, workdir, mode):
    """Each part must be exactly one zstd frame with content size and content checksum; the
    index's sizes and XXH64s are consistent, so only that rule is broken."""
    d = dataset("small")
    md = pw.default_metadata(n=d.n, inputs=[os.path.basename(f) for f in d.fts],
                             base=os.path.basename(d.base))
    root = os.path.join(str(workdir), "frames")
    os.makedirs(root, exist_ok=True)
    patch = os.path.join(root, f"{mode}.negpatch")
    pw.write_patch(patch, d.tau(), pr.fingerprint(d.base), md, block_elements=4096,
                   frame_mode=mode)
    with pytest.raises(pr.PatchError):
        pr.read_patch(patch)
    out = os.path.join(root, f"{mode}.tau.safetensors")
    clean(out)
    w = DirWatch(root)
    r = cli.run("export", patch, "-o", out)
    assert_error(r, os.path.basename(patch))
    assert w.new() == []


# ---------------------------------------------------------------------------- signed zeros

_ZERO_BITS = {"F32": np.uint32(0x8000_0000), "F64": np.uint64(0x8000_0000_0000_0000),
              "F16": np.uint16(0x8000), "BF16": np.uint16(0x8000)}
_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16", "F64"])
def test_zero_tau_keeps_a_negative_zero_base_under_a_negative_lambda(cli, workdir, dtype):
    """formats/methods.md: an element whose tau is zero is left bit-identical. With a base
    of -0.0 and lambda = -1, `base - lambda * tau` would turn it into +0.0, so writing
    where tau is zero shows. Block 0 (60 of 64 nonzero) is stored dense, block 1 (half
    nonzero) sparse; tau is zero of both signs (a fine-tuned +0.0 or -0.0 over -0.0)."""
    folder = os.path.join(str(workdir), f"signed-zero-{dtype}")
    os.makedirs(folder, exist_ok=True)
    count = 128
    i = np.arange(count)
    zero = np.where(i < 64, i % 16 == 5, i % 2 == 1)  # where tau is zero
    ft = np.where(zero, np.where(i % 4 == 1, np.float32(0), np.float32(-0.0)),
                  np.where(i % 3 == 0, np.float32(0.5), np.float32(-0.25))).astype(np.float32)
    base_raw = np.full(count, _ZERO_BITS[dtype]).view(st.DTYPES[dtype])
    base = os.path.join(folder, "base.safetensors")
    ft1 = os.path.join(folder, "ft_1.safetensors")
    st.save_file(base, {"w": (dtype, (count,), base_raw)})
    st.save_file(ft1, {"w": (dtype, (count,), st.from_f32(dtype, ft))})
    patch = os.path.join(folder, "p.negpatch")
    cli.ok("merge", "--base", base, ft1, "-o", patch, "--method", "task-arithmetic",
           "--block-size", "64", "-q")
    blocks = pr.read_patch(patch).index["tensors"][0]["blocks"]
    assert [b["encoding"] for b in blocks] == ["dense", "sparse"], blocks
    for fmt in ("negpatch", "h5"):
        source = patch
        if fmt == "h5":
            source = os.path.join(folder, "p.h5")
            cli.ok("convert", patch, source)
        out = os.path.join(folder, f"out-{fmt}.safetensors")
        cli.ok("apply", "--base", base, "--patch", source, "--lambda=-1", "-o", out, "-q")
        got = st.load_checkpoint(out)[0]["w"][2].reshape(-1)
        width = got.dtype.itemsize
        got_bits = got.view(_UINT[width])
        # -0.0 - (-1) * tau = tau, exactly, in every dtype for these values.
        want_bits = np.where(zero, _ZERO_BITS[dtype], st.from_f32(dtype, ft).view(_UINT[width]))
        bad = np.flatnonzero(got_bits != want_bits)
        assert bad.size == 0, (f"{fmt}: elements {bad[:8].tolist()} are "
                               f"{[hex(int(x)) for x in got_bits[bad[:8]]]}, "
                               f"want {[hex(int(x)) for x in want_bits[bad[:8]]]}")
