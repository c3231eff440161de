"""The other merge methods of formats/methods.md through `negpatch merge --method`, bit for
bit against merge_ref, on the small sets (F32, and F16 with misaligned data)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import patch_reader as pr
from conftest import REPORT, describe_mismatch

# (method, CLI options, merge_ref parameters)
CASES = [
    ("negmerge", [], {}),
    ("consensus", [], {}),
    ("consensus", ["--min-agree", "2"], {"min_agree": 2}),
    ("consensus", ["--min-agree", "3"], {"min_agree": 3}),
    ("uniform", [], {}),
    ("task-arithmetic", [], {}),
    ("task-arithmetic", ["--weights", "0,0,1"], {"weights": ["0", "0", "1"]}),
    ("task-arithmetic", ["--weights", "0.5,-1,0.3"], {"weights": ["0.5", "-1", "0.3"]}),
    ("ties", [], {}),
    ("ties", ["--density", "0.5"], {"density": 0.5}),
    ("ties", ["--density", "1"], {"density": 1.0}),
    ("magmax", [], {}),
    ("dare", [], {}),
    ("dare", ["--drop", "0.3", "--seed", "7"], {"drop": 0.3, "seed": 7}),
    ("dare", ["--drop", "0"], {"drop": 0.0}),
    ("dare-ties", [], {}),
    ("dare-ties", ["--drop", "0.3", "--seed", "7"], {"drop": 0.3, "seed": 7}),
    ("dare-ties", ["--drop", "0"], {"drop": 0.0}),
    ("magnitude-prune", [], {}),
    ("magnitude-prune", ["--density", "0.5"], {"density": 0.5}),
    ("magnitude-prune", ["--density", "1"], {"density": 1.0}),
]
IDS = [m + "".join(o).replace("--", "-") for m, o, _ in CASES]


@pytest.mark.parametrize("key", ["small", "misaligned"])
@pytest.mark.parametrize("method,opts,params", CASES, ids=IDS)
def test_method_matches_reference(cli, dataset, workdir, key, method, opts, params):
    d = dataset(key)
    root = os.path.join(str(workdir), "methods")
    os.makedirs(root, exist_ok=True)
    tag = f"{key}-{method}{''.join(opts)}".replace(",", "_")
    out = os.path.join(root, tag + ".negpatch")
    cli.ok("merge", "--base", d.base, *d.fts, "-o", out, "--method", method, *opts)
    p = pr.read_patch(out)
    assert p.metadata["method"] == method
    ref = d.tau(method, **params)
    problems = [x for x in (describe_mismatch(n, p.tensors[n], e) for n, e in ref.items()) if x]
    assert not problems, "\n".join(problems[:10])
    nz = sum(int(np.count_nonzero(t)) for t in ref.values())
    el = sum(t.size for t in ref.values())
    if key == "small":
        REPORT.append(f"method {tag}: density {nz / el:.3f}, parameters "
                      f"{dict(p.metadata['parameters'])}")
    # agreement is the sign statistic of the inputs, whatever the method
    want = d.agreement()
    bad = [e["name"] for e in p.entries if e["agreement"] != want[e["name"]]]
    assert not bad, f"agreement differs for {bad[:5]}"
