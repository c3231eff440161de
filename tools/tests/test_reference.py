"""Checks of the Python reference itself (no CLI needed): safetensors I/O against the
`safetensors` package, BF16 rounding, XXH64 and the DARE mixer against known values, every
merge method against a per-element loop, and the patch reader against its own writer."""

from __future__ import annotations

import json
import math
import os
import zlib

import numpy as np
import pytest
import safetensors.numpy as stnp
import xxhash

import gen_checkpoints
import merge_ref as mr
import patch_reader as pr
import patch_writer as pw
import safetensors_np as st
from cases import index_mutations, malformed_safetensors_cases, rewrite_index

# ---------------------------------------------------------------------------- safetensors


def _sample_tensors(rng):
    return {
        "a": ("F32", rng.standard_normal((3, 5)).astype(np.float32)),
        "b": ("F16", rng.standard_normal(7).astype(np.float16)),
        "c": ("F64", rng.standard_normal((2, 2, 2))),
        "d": ("I64", np.arange(5, dtype=np.int64) - 2),
        "e": ("I32", np.arange(3, dtype=np.int32)),
        "f": ("I16", np.arange(3, dtype=np.int16)),
        "g": ("I8", np.array([-1, 2], dtype=np.int8)),
        "h": ("U8", np.array([255, 0, 7], dtype=np.uint8)),
        "i": ("BOOL", np.array([True, False, True])),
        "s": ("F32", np.array(1.5, dtype=np.float32)),  # scalar
        "z": ("F32", np.zeros(0, dtype=np.float32)),     # empty
    }


def test_writer_read_by_safetensors_package(tmp_path):
    t = _sample_tensors(np.random.default_rng(0))
    p = tmp_path / "x.safetensors"
    st.save_file(p, t, {"format": "pt"})
    got = stnp.load_file(str(p))
    assert set(got) == set(t)
    for k, (_, arr) in t.items():
        assert got[k].shape == np.shape(arr), k
        assert got[k].tobytes() == np.asarray(arr).tobytes(), k


def test_reader_reads_safetensors_package_files(tmp_path):
    t = _sample_tensors(np.random.default_rng(1))
    p = tmp_path / "y.safetensors"
    stnp.save_file({k: np.asarray(v) for k, (_, v) in t.items()}, str(p),
                   metadata={"format": "np"})
    got, md = st.read_file(p)
    assert md == {"format": "np"}
    for k, (dt, arr) in t.items():
        assert got[k][0] == dt, k
        assert got[k][1] == np.shape(arr), k
        assert got[k][2].tobytes() == np.asarray(arr).tobytes(), k
    # data order: ascending offsets, so offsets tile the data
    ents = st.read_header(p)[2]
    assert [e[3] for e in ents] == sorted(e[3] for e in ents)


def test_bf16_tensor_round_trip(tmp_path):
    raw = np.array([0x3F80, 0xBF80, 0x7F80, 0x0001, 0x8000], dtype=np.uint16)
    p = tmp_path / "b.safetensors"
    st.save_file(p, {"w": ("BF16", raw)})
    got, _ = st.read_file(p)
    assert got["w"][0] == "BF16" and got["w"][2].dtype == np.uint16
    assert got["w"][2].tobytes() == raw.tobytes()


def test_sharded_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    t = {f"model.layers.{i}.w": ("F32", rng.standard_normal(100 + i).astype(np.float32))
         for i in range(7)}
    t["lm_head.weight"] = ("F32", rng.standard_normal(50).astype(np.float32))
    files = st.save_sharded(tmp_path / "ck", t, 3)
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    idx = json.loads((tmp_path / "ck" / "model.safetensors.index.json").read_text())
    assert idx["metadata"]["total_size"] == sum(a.nbytes for _, a in t.values())
    assert set(idx["weight_map"]) == set(t)
    got, md = st.load_checkpoint(tmp_path / "ck")
    assert md == {"format": "pt"}
    assert set(got) == set(t)
    for k, (_, a) in t.items():
        assert got[k][2].tobytes() == a.tobytes()
    # base order: shards by first appearance in the sorted weight_map ("lm_head" sorts first)
    order = st.checkpoint_files(tmp_path / "ck")
    assert os.path.basename(order[0]) == idx["weight_map"]["lm_head.weight"]


def test_folder_with_model_safetensors(tmp_path):
    (tmp_path / "m").mkdir()
    st.save_file(tmp_path / "m" / "model.safetensors", {"w": ("F32", np.ones(3, np.float32))})
    got, _ = st.load_checkpoint(tmp_path / "m")
    assert list(got) == ["w"]


@pytest.mark.parametrize("case", sorted(malformed_safetensors_cases()))
def test_reader_rejects_malformed(tmp_path, case):
    p = tmp_path / f"{case}.safetensors"
    p.write_bytes(malformed_safetensors_cases()[case])
    with pytest.raises(st.SafetensorsError, match=case):
        st.read_file(p)


# ---------------------------------------------------------------------------- bf16 / hashes


def test_bf16_upcast_exact_and_round_trip():
    allbits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    f = st.bf16_to_f32(allbits)
    assert np.array_equal(f.view(np.uint32), allbits.astype(np.uint32) << 16)
    back = st.f32_to_bf16(f)
    nan = np.isnan(f)
    assert np.array_equal(back[~nan], allbits[~nan])
    assert np.isnan(st.bf16_to_f32(back[nan])).all()  # NaN stays NaN (quieted)


def test_f32_to_bf16_is_round_to_nearest_even():
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 1 << 32, size=200_000, dtype=np.uint64).astype(np.uint32)
    edge = [0x3F808000, 0x3F818000, 0x3F808001, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000,
            0x7F7F7FFF, 0x00008000, 0x80018000, 0x7F800000, 0xFF800000, 0, 0x80000000]
    bits = np.concatenate([bits, np.array(edge, dtype=np.uint32)])
    x = bits.view(np.float32)
    keep = ~np.isnan(x)
    bits, x = bits[keep], x[keep]
    r = st.f32_to_bf16(x)
    # candidates: truncation t (towards zero) and t + 1 (one bf16 ulp away from zero)
    t = (bits >> 16).astype(np.uint16)
    lo = np.abs(st.bf16_to_f32(t).astype(np.float64))
    up_bits = (t.astype(np.uint32) + 1) << 16
    with np.errstate(invalid="ignore"):  # t + 1 past inf is a NaN pattern (x = inf only)
        up = np.abs(up_bits.astype(np.uint32).view(np.float32).astype(np.float64))
        up = np.where(np.isinf(up), 2.0 ** 128, up)  # past the largest finite: inf, at 2^128
        ax = np.abs(x.astype(np.float64))
        d_lo, d_up = ax - lo, up - ax
    exp = np.where(d_lo < d_up, t, np.where(d_up < d_lo, t + 1, np.where(t % 2 == 0, t, t + 1)))
    exp = np.where(np.isinf(x) | (d_lo == 0), t, exp).astype(np.uint16)
    bad = np.flatnonzero(r != exp)
    assert len(bad) == 0, [(hex(bits[i]), hex(r[i]), hex(exp[i])) for i in bad[:5]]
    assert st.f32_to_bf16(np.array([3.3895314e38], np.float32))[0] == 0x7F7F  # max finite
    assert st.f32_to_bf16(np.array([3.4e38], np.float32))[0] == 0x7F80  # rounds to inf
    assert st.f32_to_bf16(np.array([1.00390625], np.float32))[0] == 0x3F80  # tie to even
    assert st.f32_to_bf16(np.array([1.01171875], np.float32))[0] == 0x3F82  # tie to even
    assert st.f32_to_bf16(np.array([-0.0], np.float32))[0] == 0x8000


def test_xxh64_known_values():
    assert pr.xxh64_hex(b"") == "ef46db3751d8e999"  # the spec's own example digest
    assert pr.xxh64_hex(b"abc") == "44bc2cf5ad770999"


def test_dare_mixer_is_splitmix64():
    # splitmix64 seeded with 0: first output = mix(0x9E3779B97F4A7C15) = 0xE220A8397B1DCDAF
    assert mr.mix_int(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF
    assert mr.mix_int(2 * 0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4
    z = np.array([0x9E3779B97F4A7C15, (2 * 0x9E3779B97F4A7C15) % (1 << 64)], dtype=np.uint64)
    assert [int(v) for v in mr.mix_np(z)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


def test_dare_uniforms_match_scalar_definition():
    name, seed = "model.layers.0.mlp.up_proj.weight", 12345
    h = mr.mix_int(seed ^ xxhash.xxh64(name.encode(), seed=0).intdigest())
    for k in (0, 3):
        hk = mr.mix_int(h + k)
        u = mr.dare_uniforms(name, seed, k, 50)
        for i in (0, 1, 49):
            want = (mr.mix_int(hk + (i + 1) * 0x9E3779B97F4A7C15) >> 11) * 2.0 ** -53
            assert u[i] == want
    u = mr.dare_uniforms(name, 0, 0, 200_000)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_decimal_to_f32_single_rounding():
    # 1 + 2^-24 + 2^-60: double rounding (to double, then float) gives 1.0; correct is up
    s = "1.000000059604644776" + "1"  # > 1 + 2^-24 (= 1.0000000596046447753906...)
    assert mr.decimal_to_f32(s) == np.nextafter(np.float32(1), np.float32(2))
    assert mr.decimal_to_f32("0.5") == np.float32(0.5)
    assert mr.decimal_to_f32("0.1") == np.float32(0.1)


# ---------------------------------------------------------------------------- merge methods


def _loop_tasks(rng, n, c):
    """Small task vectors full of ties, zeros, -0.0 and repeated magnitudes."""
    vals = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 0.25, 3.0, -3.0, 1e-30, -1e-30],
                    dtype=np.float32)
    ts = [vals[rng.integers(0, len(vals), c)] for _ in range(n)]
    ts = [np.where(rng.random(c) < 0.5, t, rng.standard_normal(c).astype(np.float32))
          .astype(np.float32) for t in ts]
    return ts


def _f(x):
    return np.float32(x)


def _loop_sum(xs):
    s = _f(0.0)
    for x in xs:
        s = _f(s + _f(x))
    return s


def _sgn(x):
    return 1 if x > 0 else (-1 if x < 0 else 0)


def loop_merge(method, ts, name="t", **p):
    n, c = len(ts), len(ts[0])
    out = np.zeros(c, dtype=np.float32)
    if method in ("ties", "magnitude-prune"):
        thr = []
        for t in ts:
            k = math.floor(float(p.get("density", 0.2)) * float(c))
            thr.append(None if k == 0 else sorted((abs(float(v)) for v in t), reverse=True)[k - 1])
    for i in range(c):
        x = [t[i] for t in ts]
        if method == "negmerge":
            if abs(sum(_sgn(v) for v in x)) == n:
                out[i] = _f(_loop_sum(x) / _f(n))
        elif method == "consensus":
            kmin = p.get("min_agree") or n // 2 + 1
            pos = sum(v > 0 for v in x)
            neg = sum(v < 0 for v in x)
            if pos != neg:
                sg = 1 if pos > neg else -1
                ag = [v for v in x if _sgn(v) == sg]
                if len(ag) >= kmin:
                    out[i] = _f(_loop_sum(ag) / _f(len(ag)))
        elif method == "uniform":
            out[i] = _f(_loop_sum(x) / _f(n))
        elif method == "task-arithmetic":
            w = p.get("weights") or [1.0] * n
            out[i] = _loop_sum(_f(_f(wk) * v) for wk, v in zip(w, x))
        elif method == "ties":
            kept = [v if (thr[k] is not None and v != 0 and abs(float(v)) >= thr[k]) else None
                    for k, v in enumerate(x)]
            s = _loop_sum(v for v in kept if v is not None)
            el = 1 if s >= 0 else -1
            ag = [v for v in kept if v is not None and _sgn(v) == el]
            out[i] = _f(_loop_sum(ag) / _f(max(len(ag), 1)))
        elif method == "magmax":
            best = x[0]
            for v in x[1:]:
                if abs(v) > abs(best):
                    best = v
            out[i] = best
        elif method == "dare":
            drop, seed = p.get("drop", 0.9), p.get("seed", 0)
            h = mr.mix_int(seed ^ xxhash.xxh64(name.encode(), seed=0).intdigest())
            resc = []
            for k, v in enumerate(x):
                u = (mr.mix_int(mr.mix_int(h + k) + (i + 1) * 0x9E3779B97F4A7C15) >> 11) \
                    * 2.0 ** -53
                resc.append(_f(0) if u < drop else _f(v / _f(1.0 - drop)))
            out[i] = _f(_loop_sum(resc) / _f(n))
        elif method == "dare-ties":
            drop, seed = p.get("drop", 0.9), p.get("seed", 0)
            h = mr.mix_int(seed ^ xxhash.xxh64(name.encode(), seed=0).intdigest())
            resc = []
            for k, v in enumerate(x):
                u = (mr.mix_int(mr.mix_int(h + k) + (i + 1) * 0x9E3779B97F4A7C15) >> 11) \
                    * 2.0 ** -53
                resc.append(_f(0) if u < drop else _f(v / _f(1.0 - drop)))
            el = 1 if _loop_sum(resc) >= 0 else -1
            ag = [v for v in resc if _sgn(v) == el]
            out[i] = _f(_loop_sum(ag) / _f(max(len(ag), 1)))
        elif method == "magnitude-prune":
            kept = [v if (thr[k] is not None and v != 0 and abs(float(v)) >= thr[k]) else _f(0)
                    for k, v in enumerate(x)]
            out[i] = _f(_loop_sum(kept) / _f(n))
    return out


CASES = [("negmerge", {}), ("consensus", {}), ("consensus", {"min_agree": 2}),
         ("consensus", {"min_agree": 4}), ("uniform", {}), ("task-arithmetic", {}),
         ("task-arithmetic", {"weights": [0, 0.5, 1, 2]}), ("ties", {}),
         ("ties", {"density": 0.5}), ("ties", {"density": 0.001}), ("ties", {"density": 1}),
         ("magmax", {}), ("dare", {}), ("dare", {"drop": 0.3, "seed": 7}),
         ("dare", {"drop": 0.0}), ("dare-ties", {}), ("dare-ties", {"drop": 0.3, "seed": 7}),
         ("dare-ties", {"drop": 0.0}), ("magnitude-prune", {}),
         ("magnitude-prune", {"density": 0.5}), ("magnitude-prune", {"density": 0.001}),
         ("magnitude-prune", {"density": 1})]


@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_methods_match_per_element_loop(method, params):
    rng = np.random.default_rng(zlib.crc32(method.encode()))
    ts = _loop_tasks(rng, 4, 600)
    got = mr.merge_tensor(method, ts, "layer.w", **params)
    exp = loop_merge(method, ts, "layer.w", **params)
    assert got.dtype == np.float32
    bad = np.flatnonzero(got.view(np.uint32) != exp.view(np.uint32))
    # +0 vs -0 may differ between the two only where both are zero; the patch stores neither
    bad = [i for i in bad if not (got[i] == 0 and exp[i] == 0)]
    assert not bad, f"{method}: {len(bad)} differ, first {bad[0]}: {got[bad[0]]} vs {exp[bad[0]]}"


def test_consensus_with_k_equal_n_is_negmerge():
    ts = _loop_tasks(np.random.default_rng(5), 5, 2000)
    a, b = mr.consensus(ts, 5), mr.negmerge(ts)
    assert np.array_equal((a != 0), (b != 0)) and np.array_equal(a[a != 0], b[b != 0])


def test_sign_histogram_sums_and_top_bar_is_negmerge():
    ts = _loop_tasks(np.random.default_rng(6), 4, 3000)
    h = mr.sign_histogram(ts)
    assert h.sum() == 3000 and len(h) == 5
    assert h[4] == np.count_nonzero(mr.negmerge(ts))


def test_negmerge_drops_exact_and_negative_zero():
    t1 = np.array([1, 1, -0.0, 2], np.float32)
    t2 = np.array([1, 0, 1, 2], np.float32)
    got = mr.negmerge([t1, t2])
    assert got.tolist() == [1, 0, 0, 2]


def test_float32_sum_order_matters_and_is_model_order():
    # (1e8 + 1) + -1e8 = 0 in float32 (1 is absorbed); model order must give exactly that
    ts = [np.array([1e8], np.float32), np.array([1.0], np.float32),
          np.array([-1e8], np.float32)]
    assert mr.uniform(ts)[0] == np.float32(0)
    ts = [ts[0], ts[2], ts[1]]
    assert mr.uniform(ts)[0] == np.float32(1) / np.float32(3)


# ---------------------------------------------------------------------------- apply


def test_apply_ref_keeps_zero_tau_elements_bit_identical():
    base = np.array([-0.0, 0.0, 1.0, np.inf, -np.inf, np.nan, 5.0], np.float32)
    base.view(np.uint32)[5] = 0x7FA00001  # signalling NaN
    tau = np.array([0, 0, 0, 0, 0, 0, 1], np.float32)
    for lam in ("1.0", "0.5", "-1"):
        out = mr.apply_ref("F32", base, tau, lam)
        assert np.array_equal(out[:6].view(np.uint32), base[:6].view(np.uint32)), lam
    assert mr.apply_ref("F32", base, tau, "0.5")[6] == np.float32(4.5)
    bf = st.f32_to_bf16(base)
    out = mr.apply_ref("BF16", bf, tau, "1")
    assert np.array_equal(out[:6], bf[:6]) and out.dtype == np.uint16


def test_apply_ref_two_roundings_and_dtypes():
    rng = np.random.default_rng(8)
    b = rng.standard_normal(1000).astype(np.float32)
    tau = rng.standard_normal(1000).astype(np.float32) * np.float32(1e-3)
    lam = np.float32(0.7)
    exp = (b - (lam * tau).astype(np.float32)).astype(np.float32)
    assert np.array_equal(mr.apply_ref("F32", b, tau, "0.7").view(np.uint32),
                          exp.view(np.uint32))
    b16 = b.astype(np.float16)
    exp16 = (b16.astype(np.float32) - (lam * tau)).astype(np.float16)
    assert np.array_equal(mr.apply_ref("F16", b16, tau, "0.7").view(np.uint16),
                          exp16.view(np.uint16))
    b64 = b.astype(np.float64) + 1e-12
    exp64 = b64 - 0.7 * tau.astype(np.float64)
    assert np.array_equal(mr.apply_ref("F64", b64, tau, "0.7"), exp64)


# ---------------------------------------------------------------------------- generator


def test_generator_contents(tmp_path):
    info = gen_checkpoints.generate(tmp_path / "g", n=4, params=200_000, dtype="BF16",
                                    consensus=0.3, seed=0)
    base, md = st.load_checkpoint(info["base"])
    fts = [st.load_checkpoint(p)[0] for p in info["fts"]]
    assert md == {"format": "pt"}
    names = list(base)
    for must in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                 "model.layers.0.mlp.up_proj.weight", "model.layers.0.input_layernorm.weight",
                 "model.norm.weight", "lm_head.weight", "model.position_ids",
                 "model.attn_mask", "model.logit_scale", "model.empty_bias"):
        assert must in names, must
    assert base["model.position_ids"][0] == "I64"
    assert base["model.attn_mask"][0] == "BOOL"
    assert base["model.logit_scale"][1] == ()
    assert base["model.empty_bias"][1] == (0,)
    total = sum(v[2].size for v in base.values())
    assert 150_000 < total < 250_000
    tau = mr.merge_checkpoints(base, fts)
    assert np.count_nonzero(tau["model.logit_scale"]) == 1
    el = sum(t.size for t in tau.values())
    density = sum(np.count_nonzero(t) for t in tau.values()) / el
    assert 0.3 < density < 0.45  # 0.3 consensus + 0.7 * 2^-3 accidental agreement
    # exact zero deltas and negative-zero differences exist
    q = "model.layers.0.self_attn.q_proj.weight"
    ts = mr.task_vectors("BF16", base[q][2], [f[q][2] for f in fts])
    zeros = np.stack([t == 0 for t in ts])
    negz = np.stack([(t == 0) & np.signbit(t) for t in ts])
    assert zeros.any(axis=0).sum() > 10 and negz.any()
    # non-floating tensors are identical in every checkpoint
    for f in fts:
        assert f["model.position_ids"][2].tobytes() == base["model.position_ids"][2].tobytes()


def test_generator_is_deterministic(tmp_path):
    a = gen_checkpoints.generate(tmp_path / "a", n=2, params=20_000, dtype="F16", seed=3)
    b = gen_checkpoints.generate(tmp_path / "b", n=2, params=20_000, dtype="F16", seed=3)
    for x, y in zip([a["base"]] + a["fts"], [b["base"]] + b["fts"]):
        assert open(x, "rb").read() == open(y, "rb").read()


def test_generator_f64_has_sub_float32_deltas(tmp_path):
    info = gen_checkpoints.generate(tmp_path / "g", n=3, params=50_000, dtype="F64", seed=1)
    base, _ = st.load_checkpoint(info["base"])
    fts = [st.load_checkpoint(p)[0] for p in info["fts"]]
    w = "model.embed_tokens.weight"
    raw_diff = np.stack([(f[w][2] != base[w][2]).reshape(-1) for f in fts])
    ts = mr.task_vectors("F64", base[w][2], [f[w][2] for f in fts])
    f32_zero = np.stack([t == 0 for t in ts])
    assert (raw_diff & f32_zero).any()  # nonzero in F64, zero in float32: dropped


# ---------------------------------------------------------------------------- patch reader


def _tiny_patch(tmp_path, encoding="sparse", block=64):
    rng = np.random.default_rng(9)
    taus = {
        "w": np.where(rng.random((9, 13)) < 0.3, rng.standard_normal((9, 13)), 0)
        .astype(np.float32),
        "s": np.array(0.25, np.float32),
        "e": np.zeros(0, np.float32),
        "z": np.zeros(70, np.float32),
    }
    fpt = {"algorithm": "xxh64", "tensors": [
        {"name": "ids", "dtype": "I64", "shape": [3], "digest": "0123456789abcdef"},
        {"name": "w", "dtype": "F32", "shape": [9, 13], "digest": "ef46db3751d8e999"},
        {"name": "s", "dtype": "BF16", "shape": [], "digest": "ef46db3751d8e999"},
        {"name": "e", "dtype": "F16", "shape": [0], "digest": "ef46db3751d8e999"},
        {"name": "z", "dtype": "F64", "shape": [70], "digest": "ef46db3751d8e999"},
    ]}
    p = tmp_path / f"tiny-{encoding}-{block}.negpatch"
    data = pw.write_patch(p, taus, fpt, pw.default_metadata(n=3), block_elements=block,
                          encoding=encoding)
    return p, data, taus, fpt


@pytest.mark.parametrize("encoding,block", [("sparse", 64), ("dense", 64), ("auto", 128),
                                            ("sparse", 4096)])
def test_reader_round_trip(tmp_path, encoding, block):
    p, _, taus, fpt = _tiny_patch(tmp_path, encoding, block)
    got = pr.read_patch(p)
    assert got.base_fingerprint == fpt
    assert list(got.tensors) == ["w", "s", "e", "z"]
    for k, v in taus.items():
        assert got.tensors[k].shape == v.shape
        assert got.tensors[k].tobytes() == v.tobytes(), k


@pytest.mark.parametrize("mode", ["no_checksum", "no_content_size", "two_frames"])
def test_reader_rejects_frames_breaking_section_4(tmp_path, mode):
    rng = np.random.default_rng(10)
    taus = {"w": np.where(rng.random(300) < 0.5, rng.standard_normal(300), 0).astype(np.float32)}
    fpt = {"algorithm": "xxh64", "tensors": [
        {"name": "w", "dtype": "F32", "shape": [300], "digest": "ef46db3751d8e999"}]}
    p = tmp_path / f"{mode}.negpatch"
    pw.write_patch(p, taus, fpt, pw.default_metadata(n=3), block_elements=128,
                   frame_mode=mode)
    with pytest.raises(pr.PatchError, match="tensor 'w', block 0"):
        pr.read_patch(p)


def test_reader_detects_every_single_byte_flip(tmp_path):
    p, data, _, _ = _tiny_patch(tmp_path, "sparse", 64)
    bad = tmp_path / "bad.negpatch"
    missed = []
    for i in range(len(data)):
        for x in (0x01, 0x80):
            b = bytearray(data)
            b[i] ^= x
            bad.write_bytes(bytes(b))
            try:
                pr.read_patch(bad)
                missed.append((i, x))
            except pr.PatchError:
                pass
    assert not missed, f"flips not detected at {missed[:10]}"


def test_reader_detects_truncation_and_extension(tmp_path):
    p, data, _, _ = _tiny_patch(tmp_path, "sparse", 64)
    bad = tmp_path / "bad.negpatch"
    for cut in list(range(0, 60)) + list(range(len(data) - 40, len(data))):
        bad.write_bytes(data[:cut])
        with pytest.raises(pr.PatchError, match="bad.negpatch"):
            pr.read_patch(bad)
    bad.write_bytes(data + b"\0")
    with pytest.raises(pr.PatchError):
        pr.read_patch(bad)


def test_reader_error_names_tensor_and_block(tmp_path):
    p, data, _, _ = _tiny_patch(tmp_path, "sparse", 64)
    # corrupt the values part of block 1 of "w", then fix up nothing: the xxh64 must catch it
    idx = pr.read_patch(p).index
    part = idx["tensors"][0]["blocks"][1]["values"]
    b = bytearray(data)
    b[part["offset"] + part["length"] // 2] ^= 0x10
    bad = tmp_path / "bad.negpatch"
    bad.write_bytes(bytes(b))
    with pytest.raises(pr.PatchError, match=r"bad\.negpatch: tensor 'w', block 1 \(values\)"):
        pr.read_patch(bad)


@pytest.mark.parametrize("case", sorted(index_mutations()))
def test_reader_semantic_index_checks(tmp_path, case):
    p, data, _, _ = _tiny_patch(tmp_path, "sparse", 64)
    bad = tmp_path / "bad.negpatch"
    bad.write_bytes(rewrite_index(data, index_mutations()[case]))
    with pytest.raises(pr.PatchError, match="bad.negpatch"):
        pr.read_patch(bad)


def test_fingerprint_of_checkpoint(tmp_path):
    t = {"a": ("F32", np.arange(4, dtype=np.float32)), "b": ("I64", np.zeros(0, np.int64))}
    p = tmp_path / "c.safetensors"
    st.save_file(p, t)
    fp = pr.fingerprint(p)
    assert fp == {"algorithm": "xxh64", "tensors": [
        {"name": "a", "dtype": "F32", "shape": [4],
         "digest": xxhash.xxh64(np.arange(4, dtype=np.float32).tobytes()).hexdigest()},
        {"name": "b", "dtype": "I64", "shape": [0], "digest": "ef46db3751d8e999"}]}


# ---------------------------------------------------------------------------- golden files

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "..", "formats", "golden")


def test_golden_patch_decodes_to_its_dense_twin():
    """formats/golden (written by negpatch): the independent reader must decode the patch to
    the dense tau file bit for bit."""
    p = pr.read_patch(os.path.join(GOLDEN, "golden.negpatch"))
    tau, _ = st.read_file(os.path.join(GOLDEN, "golden.tau.safetensors"))
    assert list(tau) == list(p.tensors)
    for name, t in p.tensors.items():
        dt, shape, arr = tau[name]
        assert dt == "F32" and shape == t.shape, name
        assert arr.tobytes() == t.tobytes(), name


def test_golden_patch_equals_reference_merge():
    """If the golden inputs are there, the reference merge of them is the golden tau, the
    per-tensor agreement counts are the sign histograms, and the fingerprint matches."""
    p = pr.read_patch(os.path.join(GOLDEN, "golden.negpatch"))
    md = p.metadata
    base_path = os.path.join(GOLDEN, md["base"])
    base, _ = st.load_checkpoint(base_path)
    fts = [st.load_checkpoint(os.path.join(GOLDEN, f))[0] for f in md["inputs"]]
    params = {k.replace("-", "_"): v for k, v in md["parameters"].items()}
    ref = mr.merge_checkpoints(base, fts, md["method"], **params)
    for name, t in ref.items():
        assert p.tensors[name].tobytes() == t.tobytes(), name
    for e in p.entries:
        dt, _, raw = base[e["name"]]
        ts = mr.task_vectors(dt, raw, [f[e["name"]][2] for f in fts])
        want = mr.sign_histogram(ts).tolist() if raw.size else [0] * (len(fts) + 1)
        assert e["agreement"] == want, e["name"]
    assert p.base_fingerprint == pr.fingerprint(base_path)


def test_gen_checkpoints_command_line(tmp_path):
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(gen_checkpoints.__file__), "gen_checkpoints.py")
    r = subprocess.run([sys.executable, script, str(tmp_path / "o"), "--n", "2", "--params",
                        "30000", "--dtype", "BF16", "--sharded", "2", "--consensus", "0.5",
                        "--seed", "4"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "o")) == ["base", "ft_1", "ft_2"]
    assert sorted(os.listdir(tmp_path / "o" / "base")) == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json"]
    base, md = st.load_checkpoint(tmp_path / "o" / "base")
    assert md == {"format": "pt"} and "lm_head.weight" in base
