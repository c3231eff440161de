#!/usr/bin/env python3
"""Generate a synthetic, Llama-shaped base checkpoint and n "fine-tuned" checkpoints.

    python tools/reference/gen_checkpoints.py OUT_DIR --n 5 --params 2000000 \\
        --dtype F32|F16|BF16|F64 [--sharded 3] [--consensus 0.3] [--seed 0] [--misalign]
        [--embed-elements 1100000]

Writes ``OUT_DIR/base.safetensors`` and ``OUT_DIR/ft_1.safetensors`` ... ``ft_n`` (with
``--sharded K``: folders ``OUT_DIR/base/``, ``OUT_DIR/ft_k/`` holding K shards and
``model.safetensors.index.json``).  Deterministic for a given seed.

What the data contains, so that tests exercise the awkward cases:

* Llama names: ``model.embed_tokens.weight``, ``model.layers.{i}.self_attn.{q,k,v,o}_proj``,
  ``mlp.{gate,up,down}_proj``, ``input_layernorm``/``post_attention_layernorm``,
  ``model.norm.weight``, ``lm_head.weight``; odd sizes so blocks end part-way.
* ``model.position_ids`` (I64) and ``model.attn_mask`` (BOOL): identical in every
  checkpoint, never part of a task vector.  ``model.rotary_emb.inv_freq``: floating but
  identical everywhere (an all-zero task vector).  ``input_layernorm`` weights move the same
  way in every model (a ~99.5% dense task vector, where a dense encoding may win).
  ``model.logit_scale`` (floating scalar, shape ``[]``, moved consistently so it survives
  NegMerge) and ``model.empty_bias`` (shape
  ``[0]``).
* Deltas: for a ``consensus`` fraction of elements every model moves the same way, elsewhere
  each model's sign is random; magnitudes ~1e-3 relative (at least a few ulps of the dtype,
  and never rounded away to an exact zero by accident).
* Deliberate exact zero deltas (``ft_k == base`` in one model on consensus elements), and
  negative-zero differences (``base = +0.0``, ``ft = -0.0``), bases of -0.0, and for F64
  deltas below float32 resolution (nonzero in F64, zero after rounding to float32).
* ``--misalign``: puts an odd-sized BOOL tensor first, so every floating tensor's data is
  misaligned (the format allows it; readers must not assume alignment).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import bf16_to_f32, f32_to_bf16, save_file, save_sharded  # noqa: E402

_EPS = {"F32": 2.0 ** -23, "F64": 2.0 ** -52, "F16": 2.0 ** -10, "BF16": 2.0 ** -7}


def llama_dims(params: int, embed_elements: int = 0):
    """(vocab, hidden, kv_hidden, intermediate, layers) with a total close to ``params``.
    ``embed_elements``: make ``embed_tokens`` and ``lm_head`` about this large each (e.g.
    more than one patch block); the total then grows to fit the layers."""
    best = None
    for layers in (2, 3, 4, 6, 8):
        for hidden in range(32, 4097, 16):
            vocab = (embed_elements // hidden) | 1 if embed_elements else 8 * hidden + 3  # odd
            kv = hidden // 4
            inter = (11 * hidden) // 4 + 5  # odd-ish, not a multiple of 8
            per_layer = 2 * hidden * hidden + 2 * kv * hidden + 3 * hidden * inter + 2 * hidden
            total = 2 * vocab * hidden + layers * per_layer + hidden + 1
            target = params + (2 * vocab * hidden if embed_elements else 0)
            err = abs(total - target)
            if best is None or err < best[0]:
                best = (err, (vocab, hidden, kv, inter, layers))
    return best[1]


def layout(params: int, misalign: bool = False, embed_elements: int = 0):
    """Ordered list of (name, kind, shape) with kind 'float', 'frozen', 'I64' or 'BOOL'."""
    vocab, hidden, kv, inter, layers = llama_dims(params, embed_elements)
    t = []
    if misalign:
        t.append(("model.attn_mask", "BOOL", (3, 7)))  # 21 bytes: everything after is odd
    t.append(("model.position_ids", "I64", (1, 67)))
    t.append(("model.rotary_emb.inv_freq", "frozen", (hidden // 8,)))
    t.append(("model.embed_tokens.weight", "float", (vocab, hidden)))
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [
            (p + "input_layernorm.weight", "float", (hidden,)),
            (p + "self_attn.q_proj.weight", "float", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", "float", (kv, hidden)),
            (p + "self_attn.v_proj.weight", "float", (kv, hidden)),
            (p + "self_attn.o_proj.weight", "float", (hidden, hidden)),
            (p + "post_attention_layernorm.weight", "float", (hidden,)),
            (p + "mlp.gate_proj.weight", "float", (inter, hidden)),
            (p + "mlp.up_proj.weight", "float", (inter, hidden)),
            (p + "mlp.down_proj.weight", "float", (hidden, inter)),
        ]
    t.append(("model.norm.weight", "float", (hidden,)))
    t.append(("model.logit_scale", "float", ()))
    t.append(("model.empty_bias", "float", (0,)))
    t.append(("lm_head.weight", "float", (vocab, hidden)))
    if not misalign:
        t.append(("model.attn_mask", "BOOL", (16, 16)))
    return t


def _round(dtype: str, x64: np.ndarray) -> np.ndarray:
    """float64 values -> raw storage of dtype (RNE; BF16 via float32)."""
    if dtype == "F64":
        return x64.astype(np.float64)
    if dtype == "F32":
        return x64.astype(np.float32)
    if dtype == "F16":
        return x64.astype(np.float16)
    return f32_to_bf16(x64.astype(np.float32))


def _as_f64(dtype: str, raw: np.ndarray) -> np.ndarray:
    if dtype == "BF16":
        return bf16_to_f32(raw).astype(np.float64)
    return raw.astype(np.float64)


def _bits(dtype: str, raw: np.ndarray) -> np.ndarray:
    return raw.view({"F64": np.uint64, "F32": np.uint32, "F16": np.uint16,
                     "BF16": np.uint16}[dtype])


def _step(dtype: str, raw: np.ndarray, up: np.ndarray) -> np.ndarray:
    """One ulp up (``up``) or down from each value of ``raw`` (finite, in storage dtype)."""
    if dtype == "BF16":
        b = raw.astype(np.int32)
        neg = (b & 0x8000) != 0
        mag = b & 0x7FFF
        # moving away from zero adds one to the magnitude bits
        away = np.where(neg, ~up, up)
        zero = mag == 0
        new_mag = np.where(away | zero, mag + 1, mag - 1)
        new_sign = np.where(zero, np.where(up, 0, 0x8000), b & 0x8000)
        return (new_sign | new_mag).astype(np.uint16)
    inf = np.array(np.inf, dtype=raw.dtype)
    return np.where(up, np.nextafter(raw, inf), np.nextafter(raw, -inf)).astype(raw.dtype)


def _pick(rng, count, frac, minimum=0):
    k = min(count, max(minimum, int(round(count * frac))))
    return rng.choice(count, size=k, replace=False) if k else np.zeros(0, dtype=np.int64)


def make_tensors(n=5, params=2_000_000, dtype="F32", consensus=0.3, seed=0, misalign=False,
                 embed_elements=0):
    """Build (base, [ft_1..ft_n]) as OrderedDicts name -> (dtype, shape, raw array)."""
    if dtype not in ("F32", "F16", "BF16", "F64"):
        raise ValueError(f"unsupported dtype {dtype}")
    if n < 1:
        raise ValueError("n must be >= 1")
    rng = np.random.default_rng(seed)
    rel = max(1e-3, 4 * _EPS[dtype])
    base = OrderedDict()
    fts = [OrderedDict() for _ in range(n)]
    for ti, (name, kind, shape) in enumerate(layout(params, misalign, embed_elements)):
        count = math.prod(shape)
        if kind == "I64":
            arr = np.arange(count, dtype=np.int64).reshape(shape)
            base[name] = ("I64", shape, arr)
            for ft in fts:
                ft[name] = ("I64", shape, arr.copy())
            continue
        if kind == "BOOL":
            arr = rng.random(shape) < 0.5
            base[name] = ("BOOL", shape, arr)
            for ft in fts:
                ft[name] = ("BOOL", shape, arr.copy())
            continue
        if kind == "frozen":  # floating, but never fine-tuned: its task vector is all zero
            arr = _round(dtype, 1.0 / (10000.0 ** (np.arange(count) / max(count, 1))))
            base[name] = (dtype, shape, arr.reshape(shape))
            for ft in fts:
                ft[name] = (dtype, shape, arr.copy().reshape(shape))
            continue
        # floating tensor
        if name.endswith("norm.weight"):
            b64 = 1.0 + 0.05 * rng.standard_normal(count)
        elif name == "model.logit_scale":
            b64 = np.array([2.5])
        else:
            b64 = 0.02 * rng.standard_normal(count)
        b_raw = _round(dtype, b64)
        special_zero = name.endswith("q_proj.weight") or name.endswith("model.norm.weight")
        zero_idx = _pick(rng, count, 0.002, 8) if special_zero else np.zeros(0, np.int64)
        # bases of +0.0 (first half of zero_idx) and -0.0 (second half)
        half = len(zero_idx) // 2
        pz, nz = zero_idx[:half], zero_idx[half:]
        b_raw[pz] = _round(dtype, np.zeros(len(pz)))
        b_raw[nz] = _round(dtype, -np.zeros(len(nz)))
        b64 = _as_f64(dtype, b_raw)

        if name == "model.logit_scale" or name.endswith("input_layernorm.weight"):
            # every model moves these the same way: dense (~99.5%) task vectors
            cons = np.ones(count, dtype=bool)
        else:
            cons = rng.random(count) < consensus
        common = np.where(rng.random(count) < 0.5, -1.0, 1.0)
        signs = np.where(cons, common, np.where(rng.random((n, count)) < 0.5, -1.0, 1.0))
        scale = np.maximum(np.abs(b64), 1e-3 if dtype != "F16" else 2e-3)
        mags = rel * scale * (0.5 + rng.random((n, count)))
        ft_raws = []
        for k in range(n):
            r = _round(dtype, b64 + signs[k] * mags[k])
            same = _bits(dtype, r) == _bits(dtype, b_raw)
            if same.any():  # never an accidental zero delta
                r[same] = _step(dtype, b_raw[same], signs[k][same] > 0)
            ft_raws.append(r)
        # deliberate exact zero deltas: one model equals the base on some consensus elements
        cidx = np.flatnonzero(cons)
        if len(cidx) > 10:
            z = rng.choice(cidx, size=max(1, len(cidx) // 200), replace=False)
            who = rng.integers(0, n, size=len(z))
            for k in range(n):
                sel = z[who == k]
                ft_raws[k][sel] = b_raw[sel]
        # negative-zero differences and -0.0 bases
        if len(zero_idx):
            q = len(pz) // 2
            pz_a, pz_b = pz[:q], pz[q:]  # a: ft_1 = -0.0 (t_1 = -0); b: every ft = -0.0
            ft_raws[0][pz_a] = _round(dtype, -np.zeros(len(pz_a)))
            for k in range(n):
                ft_raws[k][pz_b] = _round(dtype, -np.zeros(len(pz_b)))
            q = len(nz) // 2
            nz_a, nz_b = nz[:q], nz[q:]  # a: all ft small positive (kept); b: ft_1 = -0.0
            tiny = 1e-3 if dtype == "F16" else 1e-5
            for k in range(n):
                ft_raws[k][nz_a] = _round(dtype, tiny * (1 + 0.5 * rng.random(len(nz_a))))
            ft_raws[0][nz_b] = _round(dtype, -np.zeros(len(nz_b)))
        if dtype == "F64" and count > 100:
            # deltas below float32 resolution: nonzero in F64, zero once rounded to float32
            sub = _pick(rng, count, 0.002, 1)
            who = rng.integers(0, n, size=len(sub))
            for k in range(n):
                sel = sub[who == k]
                ft_raws[k][sel] = b_raw[sel] * (1 + 1e-12)
        base[name] = (dtype, shape, b_raw.reshape(shape))
        for k in range(n):
            fts[k][name] = (dtype, shape, ft_raws[k].reshape(shape))
    return base, fts


_ULP1 = {"F32": 2.0 ** -23, "F16": 2.0 ** -10, "BF16": 2.0 ** -7, "F64": 2.0 ** -23}
_MAX = {"F32": float(np.finfo(np.float32).max), "F16": 65504.0,
        "BF16": float(bf16_to_f32(np.array([0x7F7F], np.uint16))[0]),
        "F64": float(np.finfo(np.float32).max)}
_MIN_SUB = {"F32": 2.0 ** -149, "F16": 2.0 ** -24, "BF16": 2.0 ** -133, "F64": 2.0 ** -149}
_QNAN_PAYLOAD = {"F32": (np.uint32, 0x7FC00123), "F16": (np.uint16, 0x7E05),
                 "BF16": (np.uint16, 0x7FC5), "F64": (np.uint64, 0x7FF8000000000123)}
NAN_P = "nan-payload"


def edge_elements(dtype):
    """(description, base, [ft_1, ft_2, ft_3]) for the hand-made edge tensor; numbers are
    float64 values rounded to the dtype, ``NAN_P`` is a quiet NaN with a payload."""
    u = _ULP1[dtype]
    mx = _MAX[dtype]
    prev_mx = float(np.nextafter(np.float32(mx), np.float32(0))) if dtype in ("F32", "F64") \
        else mx - (32.0 if dtype == "F16" else 2.0 ** 120)
    inf, nan = float("inf"), float("nan")
    big = mx * 0.75
    return [
        ("nan base and fts: t = NaN, sign 0, dropped; apply keeps the NaN bits", nan,
         [nan, nan, nan]),
        ("NaN base with payload, finite fts: t = NaN, dropped", NAN_P, [1.0, 1.0, 1.0]),
        ("+inf base and fts: t = inf - inf = NaN, dropped", inf, [inf, inf, inf]),
        ("-inf base, finite fts: t = +inf in every model, kept as +inf", -inf,
         [1.0, 2.0, 3.0]),
        ("finite base, +inf fts: t = +inf, tau = +inf", 1.0, [inf, inf, inf]),
        ("largest finite base, one ulp lower fts: apply overflows to inf", mx,
         [prev_mx, prev_mx, prev_mx]),
        ("sum overflows float32 before the division (F32/BF16)", 0.0, [big, big, big]),
        ("model-order float32 sum absorbs small terms (2^15 + 2^-9 + 2^-9)", 0.0,
         [2.0 ** 15, 2.0 ** -9, 2.0 ** -9]),
        ("model-order float32 sum absorbs small terms (1 + 2^-24 + 2^-24)", 0.0,
         [1.0, 2.0 ** -24, 2.0 ** -24]),
        ("smallest subnormal deltas: no flush to zero", 0.0,
         [_MIN_SUB[dtype]] * 3),
        ("-0 base, +0 fts: t = +0, dropped; apply keeps -0", -0.0, [0.0, 0.0, 0.0]),
        ("+0 base, -0 fts: t = -0, dropped", 0.0, [-0.0, -0.0, -0.0]),
        ("-0 base, tiny positive fts: kept; apply of a -0 base", -0.0,
         [2.0 ** -10, 2.0 ** -10, 2.0 ** -10]),
        ("tau = ulp(1): lambda 0.25 lands on a tie below 1 (RNE -> 1.0)", 1.0,
         [1 + u, 1 + u, 1 + u]),
        ("tau = -ulp(1)/2: lambda 1 lands on the tie 1 + ulp/2 (RNE -> 1.0)", 1.0,
         [1 - u / 2, 1 - u / 2, 1 - u / 2]),
        ("base 1+2ulp, tau = ulp: lambda 0.5 lands on a tie (RNE -> even 1+2ulp)", 1 + 2 * u,
         [1 + 3 * u, 1 + 3 * u, 1 + 3 * u]),
        ("one exact zero delta: dropped", 1.0, [1 + u, 1.0, 1 + u]),
        ("mixed signs: dropped", 1.0, [1 + u, 1 - u / 2, 1 + u]),
        ("ordinary kept element", 2.0, [3.0, 5.0, 2.5]),
        ("ordinary kept negative element", 0.0, [-3.0, -1.0, -2.0]),
        ("beyond float32 range (F64): float32(base) = float32(ft) = inf, t = NaN, dropped",
         1e300 if dtype == "F64" else inf, [1.001e300 if dtype == "F64" else inf] * 3),
    ]


def make_edge_set(dtype="F32"):
    """(base, [ft_1, ft_2, ft_3], descriptions): tensors ``model.edge.weight`` (the cases of
    ``edge_elements``), ``model.frozen.weight`` (all-zero task vector), ``model.ids`` (I64)."""
    cases = edge_elements(dtype)
    cols = [[c[1] for c in cases]] + [[c[2][k] for c in cases] for k in range(3)]
    store = {"F64": np.uint64, "F32": np.uint32, "F16": np.uint16, "BF16": np.uint16}[dtype]
    raws = []
    for col in cols:
        vals = np.array([float("nan") if v == NAN_P else v for v in col], dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            r = _round(dtype, vals)
        for i, v in enumerate(col):
            if v == NAN_P:
                t, bits = _QNAN_PAYLOAD[dtype]
                r.view(store)[i] = t(bits)
        raws.append(r)
    frozen = _round(dtype, np.linspace(-1, 1, 77))
    ids = np.arange(5, dtype=np.int64)
    out = []
    for r in raws:
        out.append(OrderedDict([("model.ids", ("I64", (5,), ids)),
                                ("model.edge.weight", (dtype, (len(cases),), r)),
                                ("model.frozen.weight", (dtype, (77,), frozen.copy()))]))
    return out[0], out[1:], [c[0] for c in cases]


def generate(out_dir, n=5, params=2_000_000, dtype="F32", sharded=0, consensus=0.3,
             seed=0, misalign=False, embed_elements=0):
    """Write the checkpoints; returns {"base": path, "fts": [paths], "dtype", "n"}."""
    os.makedirs(out_dir, exist_ok=True)
    base, fts = make_tensors(n, params, dtype, consensus, seed, misalign, embed_elements)
    md = {"format": "pt"}
    paths = []
    for label, tensors in [("base", base)] + [(f"ft_{k + 1}", ft) for k, ft in enumerate(fts)]:
        if sharded and sharded > 1:
            p = os.path.join(out_dir, label)
            save_sharded(p, tensors, sharded, md)
        else:
            p = os.path.join(out_dir, label + ".safetensors")
            save_file(p, tensors, md)
        paths.append(p)
    return {"base": paths[0], "fts": paths[1:], "dtype": dtype, "n": n}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--params", type=int, default=2_000_000)
    ap.add_argument("--dtype", choices=["F32", "F16", "BF16", "F64"], default="F32")
    ap.add_argument("--sharded", type=int, default=0, metavar="K")
    ap.add_argument("--consensus", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--misalign", action="store_true")
    ap.add_argument("--embed-elements", type=int, default=0,
                    help="size embed_tokens and lm_head to about this many elements each")
    a = ap.parse_args(argv)
    r = generate(a.out_dir, a.n, a.params, a.dtype, a.sharded, a.consensus, a.seed,
                 a.misalign, a.embed_elements)
    print(f"wrote {r['base']} and {len(r['fts'])} fine-tuned checkpoints ({a.dtype})")


if __name__ == "__main__":
    main()
