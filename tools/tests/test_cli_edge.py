"""Hand-made IEEE edge cases (gen_checkpoints.edge_elements): NaN and inf bases and deltas,
signed zeros, subnormals, float32 sum order and overflow, round-to-nearest-even ties in the
apply, and an all-zero task vector.  Each element's purpose is named in the failure.

Non-finite inputs are refused unless `--allow-nonfinite` is given; the IEEE cases run with
it, and `test_edge_nonfinite_is_refused_by_default` checks the refusal."""

from __future__ import annotations

import os

import numpy as np
import pytest

import gen_checkpoints
import merge_ref as mr
import patch_reader as pr
import safetensors_np as st
from conftest import _bits, assert_error, clean

DTYPES = ["F32", "F16", "BF16", "F64"]
_CACHE: dict = {}


def _explain(what, got, exp, desc):
    gb, eb = _bits(np.asarray(got)).reshape(-1), _bits(np.asarray(exp)).reshape(-1)
    bad = np.flatnonzero(gb != eb)
    w = 2 * np.asarray(got).dtype.itemsize
    g, e = np.asarray(got).reshape(-1), np.asarray(exp).reshape(-1)
    return [f"{what}[{i}] ({desc[i]}): got 0x{int(gb[i]):0{w}x} ({g[i]!r}), "
            f"expected 0x{int(eb[i]):0{w}x} ({e[i]!r})" for i in bad]


@pytest.fixture(scope="module")
def edge(cli, workdir):
    def get(dtype):
        if dtype not in _CACHE:
            base, fts, desc = gen_checkpoints.make_edge_set(dtype)
            root = os.path.join(str(workdir), "edge", dtype)
            os.makedirs(root, exist_ok=True)
            paths = []
            for label, t in [("base", base)] + [(f"ft_{k + 1}", f) for k, f in enumerate(fts)]:
                p = os.path.join(root, label + ".safetensors")
                st.save_file(p, t, {"format": "pt"})
                paths.append(p)
            patch = os.path.join(root, "edge.negpatch")
            cli.ok("merge", "--base", paths[0], *paths[1:], "-o", patch, "--allow-nonfinite")
            with np.errstate(all="ignore"):
                ref = mr.merge_checkpoints(base, fts)
            _CACHE[dtype] = (paths, patch, base, ref, desc)
        return _CACHE[dtype]
    return get


@pytest.mark.parametrize("dtype", DTYPES)
def test_edge_merge(edge, dtype):
    paths, patch, base, ref, desc = edge(dtype)
    p = pr.read_patch(patch)
    problems = _explain(f"{dtype} tau edge", p.tensors["model.edge.weight"],
                        ref["model.edge.weight"], desc)
    frozen = p.tensors["model.frozen.weight"]
    if np.count_nonzero(frozen):
        problems.append(f"all-zero task vector decoded with {np.count_nonzero(frozen)} nonzeros")
    ent = {e["name"]: e for e in p.entries}
    if ent["model.frozen.weight"]["nonzeros"] != 0:
        problems.append("frozen tensor: nonzeros != 0 in the index")
    if "model.ids" in ent:
        problems.append("I64 tensor has a 'tensors' entry")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("lam", [None, "0.5", "0.25"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_edge_apply(cli, edge, workdir, dtype, lam):
    paths, patch, base, ref, desc = edge(dtype)
    taus = pr.read_patch(patch).tensors
    out = os.path.join(str(workdir), "edge", dtype, f"applied-{lam}.safetensors")
    clean(out)
    args = ["apply", "--base", paths[0], "--patch", patch, "-o", out, "--allow-nonfinite"]
    if lam:
        args += ["--lambda", lam]
    cli.ok(*args)
    got, _ = st.read_file(out)
    problems = []
    for name, (dt, shape, barr) in base.items():
        if dt not in st.FLOAT_DTYPES:
            if got[name][2].tobytes() != barr.tobytes():
                problems.append(f"{name} ({dt}) changed")
            continue
        exp = mr.apply_ref(dt, barr, taus[name], lam or "1.0")
        d = desc if name == "model.edge.weight" else ["frozen"] * barr.size
        problems += _explain(f"{dtype} apply lambda {lam or 'patch'} {name}", got[name][2], exp, d)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dtype", DTYPES)
def test_edge_nonfinite_is_refused_by_default(cli, edge, workdir, dtype):
    """Without --allow-nonfinite, merge and apply refuse the NaN/inf inputs: exit 1, one
    line naming the file, the tensor and the first element, nothing written."""
    paths, patch, base, ref, desc = edge(dtype)
    root = os.path.dirname(paths[0])
    # The merge sees float32 (an F64 value beyond its range counts as infinite); the base
    # is scanned first.
    with np.errstate(all="ignore"):
        as_f32 = st.to_f32(dtype, base["model.edge.weight"][2]).reshape(-1)
    first = int(np.flatnonzero(~np.isfinite(as_f32))[0])
    out = os.path.join(root, "refused.negpatch")
    clean(out)
    r = cli.run("merge", "--base", paths[0], *paths[1:], "-o", out)
    assert_error(r, os.path.basename(paths[0]), "model.edge.weight", f"at element {first} ", "--allow-nonfinite")
    assert not os.path.exists(out)
    applied = os.path.join(root, "refused.safetensors")
    clean(applied)
    r = cli.run("apply", "--base", paths[0], "--patch", patch, "-o", applied)
    assert_error(r, "model.edge.weight", "non-finite", "--allow-nonfinite")
    assert not os.path.exists(applied)
    assert not [n for n in os.listdir(root) if n.startswith(".")], "temporary files left behind"
