"""`merge --direction add`: patches that apply theta = base + lambda * tau (formats/methods.md),
in both formats, read by both reference readers, shown by audit/verify/diff; subtracting
patches keep the bytes they had before the field existed."""

from __future__ import annotations

import json
import os

import h5py
import pytest

import hdf5_reader
import patch_reader as pr
import safetensors_np as st
from cases import rewrite_index
from conftest import assert_error
from test_cli_apply import compare_checkpoint


def _merge(cli, d, out, *opts):
    cli.ok("merge", "--base", d.base, *d.fts, "-o", out, "--quiet", *opts)
    return out


@pytest.mark.parametrize("key", ["small", "misaligned"])
@pytest.mark.parametrize("fmt", ["negpatch", "h5"])
def test_add_patch_applies_base_plus_lambda_tau(cli, dataset, tmp_path, key, fmt):
    d = dataset(key)
    patch = _merge(cli, d, str(tmp_path / f"add.{fmt}"), "--direction", "add", "--lambda", "0.75")
    read = pr.read_patch if fmt == "negpatch" else hdf5_reader.read_patch
    p = read(patch)
    assert p.metadata["direction"] == "add"
    assert p.metadata["lambda"] == 0.75
    taus = d.tau()  # the merge does not depend on the direction
    for name, tau in taus.items():
        assert p.tensors[name].tobytes() == tau.tobytes(), name
    # the recorded lambda, an override, and a negative one (the -0.0 rule still holds)
    for lam in (None, "1.5", "-0.5"):
        out = str(tmp_path / f"out-{lam}.safetensors")
        cli.ok("apply", "--base", d.base, "--patch", patch, "-o", out, "--quiet",
               *([f"--lambda={lam}"] if lam else []))
        problems = compare_checkpoint(d.base, out, taus, lam or "0.75", "add")
        assert not problems, "\n".join(problems[:10])
    # a sweep decodes once and applies each lambda in the patch's direction
    sweep = str(tmp_path / "sweep")
    cli.ok("apply", "--base", d.base, "--patch", patch, "--lambda", "0.25,2", "-o", sweep, "--quiet")
    for lam in ("0.25", "2"):
        problems = compare_checkpoint(d.base, os.path.join(sweep, f"lambda-{lam}.safetensors"), taus, lam, "add")
        assert not problems, "\n".join(problems[:10])


def test_subtract_is_the_default_and_leaves_no_field(cli, dataset, tmp_path):
    d = dataset("small")
    default = _merge(cli, d, str(tmp_path / "default.negpatch"))
    explicit = _merge(cli, d, str(tmp_path / "explicit.negpatch"), "--direction", "subtract")
    added = _merge(cli, d, str(tmp_path / "add.negpatch"), "--direction", "add")
    with open(default, "rb") as f, open(explicit, "rb") as g:
        assert f.read() == g.read()
    assert "direction" not in pr.read_patch(default).index["metadata"]
    assert pr.read_patch(default).metadata["direction"] == "subtract"
    assert pr.read_patch(added).index["metadata"]["direction"] == "add"
    h5_default = _merge(cli, d, str(tmp_path / "default.h5"))
    h5_added = _merge(cli, d, str(tmp_path / "add.h5"), "--direction", "add")
    with h5py.File(h5_default, "r") as f:
        assert "direction" not in f.attrs
    with h5py.File(h5_added, "r") as f:
        assert f.attrs["direction"] in ("add", b"add")
    # conversion keeps the direction both ways, and export records it
    back = str(tmp_path / "back.negpatch")
    cli.ok("convert", h5_added, back, "--quiet")
    assert pr.read_patch(back).metadata["direction"] == "add"
    tau = str(tmp_path / "tau.safetensors")
    cli.ok("export", added, "-o", tau, "--quiet")
    assert st.read_file(tau)[1]["negpatch.direction"] == "add"
    cli.ok("export", default, "-o", tau, "--quiet")
    assert "negpatch.direction" not in st.read_file(tau)[1]


def test_audit_verify_diff_show_the_direction(cli, dataset, tmp_path):
    d = dataset("small")
    sub = _merge(cli, d, str(tmp_path / "sub.negpatch"))
    add = _merge(cli, d, str(tmp_path / "add.negpatch"), "--direction", "add")
    assert "theta = base + lambda * tau" in cli.ok("audit", add).stdout
    assert "theta = base - lambda * tau" in cli.ok("audit", sub).stdout
    assert json.loads(cli.ok("audit", add, "--json").stdout)["metadata"]["direction"] == "add"
    assert "direction" not in json.loads(cli.ok("audit", sub, "--json").stdout)["metadata"]
    assert "applies theta = base + lambda * tau" in cli.ok("verify", add).stdout.splitlines()[0]
    diff = cli.ok("diff", sub, add).stdout
    assert "subtracts tau" in diff and "adds tau" in diff and "OPPOSITE directions" in diff


def test_unknown_direction_is_a_usage_error_and_bad_field_is_rejected(cli, dataset, tmp_path):
    d = dataset("small")
    r = cli.run("merge", "--base", d.base, *d.fts, "-o", str(tmp_path / "x.negpatch"), "--direction", "sideways")
    assert r.returncode == 2, r.describe()
    assert not os.path.exists(str(tmp_path / "x.negpatch"))
    patch = _merge(cli, d, str(tmp_path / "add.negpatch"), "--direction", "add")
    with open(patch, "rb") as f:
        data = f.read()
    bad = str(tmp_path / "bad.negpatch")
    with open(bad, "wb") as f:
        f.write(rewrite_index(data, lambda i: i["metadata"].update(direction="sideways")))
    with pytest.raises(pr.PatchError, match="direction"):
        pr.read_patch(bad)
    for args in (["audit", bad], ["verify", bad], ["apply", "--base", d.base, "--patch", bad, "-o", str(tmp_path / "o.safetensors")]):
        r = cli.run(*args)
        if args[0] == "verify":
            assert r.returncode == 1 and "direction" in r.stdout, r.describe()
        else:
            assert_error(r, "bad.negpatch", "direction")
    assert not os.path.exists(str(tmp_path / "o.safetensors"))
