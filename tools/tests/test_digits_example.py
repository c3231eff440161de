"""The digits example (tools/examples/digits/digits.py), reduced: n = 6 fine-tuned copies,
lambda grid step 0.1. Checks that NegMerge really forgets the digit and that the CLI's
applied checkpoint equals the NumPy reference of formats/methods.md bit for bit.

Needs the negpatch binary: $NEGPATCH_BIN, else .build/release/negpatch, else
.build/debug/negpatch. Fails (does not skip) when none is there.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "digits"))
import digits  # noqa: E402

N = 6
GRID_STEP = 0.1
FORGET = 3


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    try:
        binary = digits.find_binary()
    except FileNotFoundError as e:
        pytest.fail(str(e))
    work = tmp_path_factory.mktemp("digits")
    return digits.run(n=N, forget=FORGET, grid_step=GRID_STEP, grid_max=3.0, work=work,
                      seed=0, binary=binary)


def row(result, method):
    return next(r for r in result["rows"] if r["method"] == method)


def test_negmerge_forgets_and_retains(result):
    base = row(result, "base model")
    neg = row(result, "negmerge")
    assert base["forget_acc"] >= 0.9, base
    assert neg["forget_acc"] <= 0.10, neg
    assert neg["retain_acc"] >= 0.95 * base["retain_acc"], (neg, base)
    assert neg["lambda"] is not None and float(neg["lambda"]) > 0


def test_every_method_has_a_row(result):
    methods = [r["method"] for r in result["rows"]]
    for m in ("base model", "negmerge", "uniform", "ties (density 0.2)", "magmax"):
        assert m in methods, result["notes"]
    assert any(m.startswith("task arithmetic (best single") for m in methods), result["notes"]
    for r in result["rows"][1:]:
        assert 0 < r["density"] <= 1
        assert r["patch_bytes"] > 0
        assert r["dense_bytes"] == 4 * sum(
            v.size for v in digits.load_checkpoint(result["work"] / "base.safetensors").values())


def test_applied_negmerge_equals_numpy_reference(result):
    chk = digits.reference_check(result, "negmerge")
    assert chk["equal"], chk
    # the patch's own nonzero count agrees with the reference vector
    neg = row(result, "negmerge")
    assert neg["density"] == pytest.approx(chk["density"], abs=0, rel=0)


@pytest.mark.parametrize("method", ["uniform", "ties", "magmax", "task arithmetic"])
def test_other_methods_equal_numpy_reference(result, method):
    if not any(r["method"].startswith(method) for r in result["rows"]):
        pytest.fail(f"no {method} row: {result['notes']}")
    chk = digits.reference_check(result, method)
    assert chk["equal"], chk


def test_whole_lambda_grid_equals_numpy_reference(result):
    """Every checkpoint of the sweep, not only the chosen lambda."""
    work = result["work"]
    base = digits.load_checkpoint(work / "base.safetensors")
    fts = [digits.load_checkpoint(work / f"ft_{k:02d}.safetensors") for k in range(1, N + 1)]
    tau = digits.negmerge_reference(base, fts)
    out = work / "applied" / "negmerge"
    for lam in result["grid"]:
        got = digits.load_checkpoint(out / f"lambda-{lam}.safetensors")
        ref = digits.apply_reference(base, tau, lam)
        for k in ref:
            assert got[k].dtype == np.float32
            assert np.array_equal(got[k].view(np.uint32), ref[k].view(np.uint32)), (lam, k)


def test_exported_negmerge_vector_equals_numpy_reference(result, tmp_path):
    work = result["work"]
    out = tmp_path / "tau.safetensors"
    proc = subprocess.run([str(result["binary"]), "export", str(row(result, "negmerge")["patch"]),
                           "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    got = digits.load_checkpoint(out)
    base = digits.load_checkpoint(work / "base.safetensors")
    fts = [digits.load_checkpoint(work / f"ft_{k:02d}.safetensors") for k in range(1, N + 1)]
    ref = digits.negmerge_reference(base, fts)
    assert set(got) == set(ref)
    for k in ref:
        assert np.array_equal(got[k].astype(np.float32).view(np.uint32), ref[k].view(np.uint32)), k
