"""Hand-made IEEE edge cases (gen_checkpoints.edge_elements): NaN and inf bases and deltas,
signed zeros, subnormals, float32 sum order and overflow, round-to-nearest-even ties in the
apply, and an all-zero task vector.  Each element's purpose is named in the failure."""

from __future__ import annotations

import os

import numpy as np
import pytest

import gen_checkpoints
import merge_ref as mr
import patch_reader as pr
import safetensors_np as st
from conftest import _bits, clean

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
            cli.ok("merge", "--base", paths[0], *paths[1:], "-o", patch)
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
    args = ["apply", "--base", paths[0], "--patch", patch, "-o", out]
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
