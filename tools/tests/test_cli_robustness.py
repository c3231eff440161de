"""Unusual but valid inputs: tensor names that need JSON escaping or are Unicode-equivalent
but distinct, zero-sized multi-dimensional tensors, writing an output over an input, many
models.  Each must either work exactly or fail cleanly (exit 1, one error line)."""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict

import numpy as np
import pytest

import merge_ref as mr
import patch_reader as pr
import safetensors_np as st
from conftest import assert_error, describe_mismatch, file_bytes

ODD_NAMES = ['quote"in.name', "back\\slash.weight", "ünïcödé.weight", "emoji😀.weight",
             "control\u0001char", "slash/and space .weight", "zero.rows"]


def _write_set(root, names, dtype, n, seed, shapes=None):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    base = OrderedDict()
    fts = [OrderedDict() for _ in range(n)]
    for i, name in enumerate(names):
        shape = (shapes or {}).get(name, (5, 7 + i))
        b = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        base[name] = (dtype, shape, st.from_f32(dtype, b))
        bf = st.to_f32(dtype, base[name][2])
        common = rng.random(shape) < 0.5
        for k in range(n):
            sign = np.where(common, 1.0, np.where(rng.random(shape) < 0.5, -1.0, 1.0))
            ft = bf * (1 + sign * 0.05 * (0.5 + rng.random(shape)))
            fts[k][name] = (dtype, shape, st.from_f32(dtype, ft.astype(np.float32)))
    paths = [os.path.join(root, "base.safetensors")]
    st.save_file(paths[0], base, {"format": "pt"})
    for k in range(n):
        paths.append(os.path.join(root, f"ft_{k + 1}.safetensors"))
        st.save_file(paths[-1], fts[k], {"format": "pt"})
    return paths, base, fts


def _check_roundtrip(cli, root, paths, base, fts):
    patch = os.path.join(root, "p.negpatch")
    cli.ok("merge", "--base", paths[0], *paths[1:], "-o", patch)
    p = pr.read_patch(patch)
    assert list(p.tensors) == list(base), "tensor names/order changed in the patch"
    ref = mr.merge_checkpoints(base, fts)
    problems = [x for x in (describe_mismatch(repr(n), p.tensors[n], e)
                            for n, e in ref.items()) if x]
    assert not problems, "\n".join(problems)
    assert p.base_fingerprint == pr.fingerprint(paths[0])
    out = os.path.join(root, "applied.safetensors")
    cli.ok("apply", "--base", paths[0], "--patch", patch, "-o", out)
    got, _ = st.read_file(out)
    assert list(got) == list(base)
    for name, (dt, _, raw) in base.items():
        d = describe_mismatch(repr(name), got[name][2], mr.apply_ref(dt, raw, p.tensors[name],
                                                                     "1.0"))
        assert not d, d
    tau = os.path.join(root, "tau.safetensors")
    cli.ok("export", patch, "-o", tau)
    assert set(st.read_file(tau)[0]) == set(base)


def test_names_needing_json_escapes(cli, workdir):
    root = os.path.join(str(workdir), "odd-names")
    shutil.rmtree(root, ignore_errors=True)
    paths, base, fts = _write_set(root, ODD_NAMES, "BF16", 3, 11,
                                  shapes={"zero.rows": (0, 4)})
    _check_roundtrip(cli, root, paths, base, fts)


def test_canonically_equivalent_names_are_distinct_tensors(cli, workdir):
    """'w\\u00e9' and 'we\\u0301' are different safetensors names (different bytes) that
    Swift's String == treats as equal.  Either both are kept apart exactly, or the file is
    refused cleanly; never a crash."""
    root = os.path.join(str(workdir), "equivalent-names")
    shutil.rmtree(root, ignore_errors=True)
    names = ["w\u00e9.weight", "we\u0301.weight"]
    paths, base, fts = _write_set(root, names, "F32", 2, 12,
                                  shapes={names[0]: (3, 3), names[1]: (4, 4)})
    patch = os.path.join(root, "p.negpatch")
    r = cli.run("merge", "--base", paths[0], *paths[1:], "-o", patch)
    if r.returncode != 0:
        assert_error(r, "base.safetensors")
        return
    _check_roundtrip(cli, root, paths, base, fts)


def test_many_models(cli, workdir):
    root = os.path.join(str(workdir), "many-models")
    shutil.rmtree(root, ignore_errors=True)
    paths, base, fts = _write_set(root, ["a.weight", "b.weight"], "F16", 24, 13)
    _check_roundtrip(cli, root, paths, base, fts)
    p = pr.read_patch(os.path.join(root, "p.negpatch"))
    assert all(len(e["agreement"]) == 25 for e in p.entries)


def test_apply_output_over_its_own_base(cli, merged, workdir):
    """-o naming the base itself: either refused (base untouched) or the result is exactly
    base - lambda*tau of the original base; never a half-written mixture."""
    m = merged("small")
    root = os.path.join(str(workdir), "in-place")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    base = os.path.join(root, "base.safetensors")
    shutil.copy(m.data.base, base)
    original = file_bytes(base)
    r = cli.run("apply", "--base", base, "--patch", m.patch, "-o", base)
    if r.returncode != 0:
        assert_error(r, "base.safetensors")
        assert file_bytes(base) == original, "a refused in-place apply changed the base"
        return
    orig_t, _ = st.read_file(m.data.base)
    got, _ = st.read_file(base)
    taus = pr.read_patch(m.patch).tensors
    for name, (dt, _, raw) in orig_t.items():
        exp = mr.apply_ref(dt, raw, taus[name], m.lam) if dt in st.FLOAT_DTYPES else raw
        d = describe_mismatch(name, got[name][2], exp)
        assert not d, d


def test_export_over_its_own_patch(cli, merged, workdir):
    """Refused either way, the patch untouched: by its name (a checkpoint is not written as
    .negpatch: a usage error), and through a hard link named like a checkpoint (by identity:
    the output is the file being read)."""
    m = merged("small")
    root = os.path.join(str(workdir), "in-place")
    os.makedirs(root, exist_ok=True)
    patch = os.path.join(root, "p.negpatch")
    shutil.copy(m.patch, patch)
    r = cli.run("export", patch, "-o", patch)
    assert r.returncode == 2 and "NegPatch file's ending" in r.stderr, r.describe()
    assert file_bytes(patch) == file_bytes(m.patch)
    alias = os.path.join(root, "alias.safetensors")
    if os.path.exists(alias):
        os.remove(alias)
    os.link(patch, alias)
    assert_error(cli.run("export", patch, "-o", alias), "overwrite")
    assert file_bytes(patch) == file_bytes(m.patch)


@pytest.mark.parametrize("spelling", ["same", "dot", "hardlink", "symlink"])
def test_apply_refuses_to_overwrite_its_inputs(cli, merged, workdir, spelling):
    """README: an output that would overwrite an input is refused, however the path is
    spelled (the check compares files, not strings), and the input is left untouched."""
    m = merged("small")
    root = os.path.join(str(workdir), f"overwrite-{spelling}")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    base = os.path.join(root, "base.safetensors")
    patch = os.path.join(root, "p.negpatch")
    shutil.copy(m.data.base, base)
    shutil.copy(m.patch, patch)
    for target, what in ((patch, "output would overwrite the patch"),
                         (base, "output would overwrite the base checkpoint")):
        original = file_bytes(target)
        name = os.path.basename(target)
        if spelling == "same":
            out = target
        elif spelling == "dot":
            out = os.path.join(root, ".", name)
        else:
            # Named like a checkpoint, so that only the identity check can refuse it.
            out = os.path.join(root, f"other-{name}" + (".safetensors" if target == patch else ""))
            (os.link if spelling == "hardlink" else os.symlink)(target, out)
        r = cli.run("apply", "--base", base, "--patch", patch, "-o", out)
        if target == patch and spelling in ("same", "dot"):
            # Spelled with the patch's own ending: a usage error before anything is read.
            assert r.returncode == 2 and "NegPatch file's ending" in r.stderr, r.describe()
        else:
            assert_error(r, what)
        assert file_bytes(target) == original, f"{what}: {target} changed"


@pytest.mark.parametrize("target", ["a-folder"])
def test_output_is_a_folder(cli, merged, workdir, target):
    m = merged("small")
    root = os.path.join(str(workdir), "out-folder")
    os.makedirs(os.path.join(root, target), exist_ok=True)
    r = cli.run("export", m.patch, "-o", os.path.join(root, target))
    assert_error(r, target)
