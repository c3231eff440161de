"""`negpatch merge` and `negpatch export` against the NumPy reference, per dtype."""

from __future__ import annotations

import os

import numpy as np
import pytest

import patch_reader as pr
import safetensors_np as st
from conftest import BIG_SETS, REPORT, DirWatch, describe_mismatch, max_rel_error

SETS_UNDER_TEST = BIG_SETS + ["misaligned"]


@pytest.fixture(scope="module")
def decoded(merged):
    cache = {}

    def get(key):
        if key not in cache:
            m = merged(key)
            cache[key] = (m, pr.read_patch(m.patch))
        return cache[key]
    return get


@pytest.mark.parametrize("key", SETS_UNDER_TEST)
def test_merge_prints_one_summary_line(merged, key):
    m = merged(key)
    lines = m.result.stdout.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].strip(), m.result.describe()


@pytest.mark.parametrize("key", SETS_UNDER_TEST)
def test_patch_is_valid_for_independent_reader(decoded, key):
    m, p = decoded(key)  # read_patch raises on any violation of section 6
    base, _ = m.data.load()
    floats = [k for k, v in base.items() if v[0] in st.FLOAT_DTYPES]
    assert list(p.tensors) == floats, "tensors entries must be the floating tensors, base order"
    for e in p.entries:
        assert e["dtype"] == base[e["name"]][0], e["name"]
        assert tuple(e["shape"]) == base[e["name"]][1], e["name"]


@pytest.mark.parametrize("key", SETS_UNDER_TEST)
def test_mask_matches_reference(decoded, key):
    m, p = decoded(key)
    ref = m.data.tau()
    problems = []
    for name, exp in ref.items():
        got = p.tensors[name]
        gm, em = got != 0, exp != 0
        if not np.array_equal(gm, em):
            idx = np.flatnonzero(gm.reshape(-1) != em.reshape(-1))
            i = idx[0]
            problems.append(f"{name}: {len(idx)} mask differences, first at element {i}: "
                            f"patch {got.reshape(-1)[i]!r}, reference {exp.reshape(-1)[i]!r}")
    assert not problems, "\n".join(problems[:10])


@pytest.mark.parametrize("key", SETS_UNDER_TEST)
def test_values_bit_exact(decoded, key):
    m, p = decoded(key)
    ref = m.data.tau()
    problems = [d for d in (describe_mismatch(n, p.tensors[n], e) for n, e in ref.items()) if d]
    assert not problems, "\n".join(problems[:10])


@pytest.mark.parametrize("key", SETS_UNDER_TEST)
def test_values_within_relative_tolerance(decoded, key):
    m, p = decoded(key)
    ref = m.data.tau()
    worst = max((max_rel_error(p.tensors[n], e), n) for n, e in ref.items())
    REPORT.append(f"merge {key}: max relative error vs reference {worst[0]:.3g}"
                  + (f" (tensor {worst[1]})" if worst[0] else ""))
    assert worst[0] <= 1e-6, f"max relative error {worst[0]} in {worst[1]}"


@pytest.mark.parametrize("key", SETS_UNDER_TEST)
def test_nonzeros_metadata(decoded, key):
    m, p = decoded(key)
    ref = m.data.tau()
    bad = [(e["name"], e["nonzeros"], int(np.count_nonzero(ref[e["name"]])))
           for e in p.entries if e["nonzeros"] != np.count_nonzero(ref[e["name"]])]
    assert not bad, f"(tensor, patch nonzeros, reference nonzeros): {bad[:10]}"
    total = sum(int(np.count_nonzero(t)) for t in ref.values())
    el = sum(t.size for t in ref.values())
    REPORT.append(f"merge {key}: {total}/{el} nonzero (density {total / el:.3f}), "
                  f"patch {os.path.getsize(m.patch)} bytes")


@pytest.mark.parametrize("key", SETS_UNDER_TEST)
def test_agreement_counts(decoded, key):
    """Each tensor's `agreement` is the sign histogram of methods.md; for negmerge its bar
    at m = n is the tensor's nonzero count."""
    m, p = decoded(key)
    want = m.data.agreement()
    n = m.data.n
    bad = [(e["name"], e["agreement"], want[e["name"]]) for e in p.entries
           if e["agreement"] != want[e["name"]]]
    assert not bad, "(tensor, patch agreement, reference histogram): " + repr(bad[:5])
    top = [(e["name"], e["agreement"][n], e["nonzeros"]) for e in p.entries
           if e["agreement"][n] != e["nonzeros"]]
    assert not top, f"agreement[n] != nonzeros: {top[:5]}"


@pytest.mark.parametrize("key", SETS_UNDER_TEST)
def test_dense_blocks_appear_where_dense_is_smaller(decoded, key):
    """The input_layernorm task vectors are ~99.5% dense; report which encodings the writer
    chose (the reader has already checked both decode right)."""
    m, p = decoded(key)
    enc = {}
    for e in p.entries:
        for b in e["blocks"]:
            enc[b["encoding"]] = enc.get(b["encoding"], 0) + 1
    REPORT.append(f"merge {key}: block encodings {enc}")
    assert set(enc) <= {"sparse", "dense"} and enc


@pytest.mark.parametrize("key", SETS_UNDER_TEST)
def test_base_fingerprint(decoded, key):
    m, p = decoded(key)
    want = pr.fingerprint(m.data.base)
    assert p.base_fingerprint["algorithm"] == "xxh64"
    got_set = {e["name"]: e for e in p.base_fingerprint["tensors"]}
    want_set = {e["name"]: e for e in want["tensors"]}
    assert got_set == want_set, "fingerprint entries differ from xxh64 of the base's tensors"
    # order: the base's order (shards by first appearance in the sorted weight_map)
    assert [e["name"] for e in p.base_fingerprint["tensors"]] == \
        [e["name"] for e in want["tensors"]]


@pytest.mark.parametrize("key", SETS_UNDER_TEST)
def test_metadata(decoded, key):
    m, p = decoded(key)
    md = p.metadata
    d = m.data
    assert md["method"] == "negmerge"
    assert md["parameters"] == {}
    assert md["n"] == d.n
    assert md["inputs"] == [os.path.basename(f) for f in d.fts]
    assert md["base"] == os.path.basename(d.base)
    assert md["lambda"] == float(m.lam)
    assert md["lossy"] is False
    assert isinstance(md["tool"], str) and md["tool"].startswith("negpatch")


def _whitespace_outside_strings(text: str):
    in_str = esc = False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in " \t\r\n":
            return i
    return None


@pytest.mark.parametrize("key", SETS_UNDER_TEST)
def test_index_is_canonical_json(decoded, key):
    """Writers emit keys sorted and no insignificant whitespace (section 3), so equal
    patches are equal bytes.  'Sorted' is taken as code-point (= UTF-8 byte) order."""
    import json
    m, p = decoded(key)
    text = p.index_bytes.decode("utf-8")
    pos = _whitespace_outside_strings(text)
    assert pos is None, \
        f"insignificant whitespace at index byte {pos}: {text[max(0, pos - 40):pos + 40]!r}"
    unsorted = []

    def hook(pairs):
        keys = [k for k, _ in pairs]
        if keys != sorted(keys):
            unsorted.append(keys)
        return dict(pairs)
    json.loads(text, object_pairs_hook=hook)
    assert not unsorted, f"objects with unsorted keys, e.g. {unsorted[0]}"


def test_merge_is_deterministic(cli, dataset, merged, workdir):
    m = merged("misaligned")
    again = os.path.join(str(workdir), "patches", "misaligned-again.negpatch")
    cli.ok("merge", "--base", m.data.base, *m.data.fts, "-o", again)
    with open(m.patch, "rb") as a, open(again, "rb") as b:
        assert a.read() == b.read(), "two merges of the same inputs differ"


@pytest.mark.parametrize("key", SETS_UNDER_TEST)
def test_export_equals_decoded_tau(cli, decoded, workdir, key):
    m, p = decoded(key)
    out = os.path.join(str(workdir), "export", f"{key}.tau.safetensors")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    w = DirWatch(os.path.dirname(out))
    cli.ok("export", m.patch, "-o", out)
    assert w.new() == [os.path.basename(out)], f"export left {w.new()}"
    got, _ = st.read_file(out)
    assert set(got) == set(p.tensors), \
        f"exported names differ: extra {set(got) - set(p.tensors)}, " \
        f"missing {set(p.tensors) - set(got)}"
    problems = []
    for name, tau in p.tensors.items():
        dt, shape, arr = got[name]
        if dt != "F32":
            problems.append(f"{name}: exported dtype {dt}, expected F32")
            continue
        if shape != tau.shape:
            problems.append(f"{name}: exported shape {shape}, expected {tau.shape}")
            continue
        d = describe_mismatch(name, arr, tau)
        if d:
            problems.append(d)
    assert not problems, "\n".join(problems[:10])


@pytest.mark.parametrize("block", ["64", "4160", "1024"])
def test_block_sizes(cli, dataset, workdir, block):
    """--block-size (the CLI's option): many blocks, partial last blocks, a block size that
    is a multiple of 64 but not a power of two; the decoded tau must not depend on it."""
    d = dataset("small")
    out = os.path.join(str(workdir), "patches", f"small-b{block}.negpatch")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if not os.path.exists(out):
        cli.ok("merge", "--base", d.base, *d.fts, "-o", out, "--block-size", block)
    p = pr.read_patch(out)
    assert {e["block_elements"] for e in p.entries} == {int(block)}
    ref = d.tau()
    problems = [x for x in (describe_mismatch(n, p.tensors[n], e) for n, e in ref.items()) if x]
    assert not problems, "\n".join(problems[:10])


def test_large_tensors_span_several_blocks(decoded):
    """Guards the data: the F32 set must exercise multi-block tensors at the default size."""
    m, p = decoded("F32")
    assert max(len(e["blocks"]) for e in p.entries) >= 2
