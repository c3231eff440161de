"""NumPy reference of every merge method in formats/methods.md, bit for bit.

Written from formats/methods.md alone.  Every function takes the task vectors of one
tensor as a list ``ts`` of 1-D float32 arrays (model order, row-major elements) and returns
one 1-D float32 array.  Float32 arithmetic is NumPy's (IEEE binary32, round-to-nearest-even,
one rounding per operation, no fused multiply-add); sums "in model order" are a Python
loop over models starting from +0.0.

``apply_ref`` implements ``theta = base - lambda * tau`` with the rounding the spec states.
"""

from __future__ import annotations

import math
import os
import sys
from collections import OrderedDict
from fractions import Fraction

import numpy as np
import xxhash

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import FLOAT_DTYPES, from_f32, to_f32  # noqa: E402

F32 = np.float32
METHODS = ("negmerge", "consensus", "uniform", "task-arithmetic", "ties", "magmax", "dare",
           "dare-ties", "magnitude-prune")


# ---------------------------------------------------------------------------- helpers


def task_vectors(dtype: str, base_raw: np.ndarray, ft_raws) -> list:
    """``t_k = float32(ft_k) - float32(base)`` as flat float32 arrays."""
    b = to_f32(dtype, base_raw).reshape(-1)
    return [(to_f32(dtype, ft).reshape(-1) - b).astype(F32, copy=False) for ft in ft_raws]


def sum_in_model_order(xs, size=None) -> np.ndarray:
    """``s = +0; s = s + x_1; s = s + x_2; ...`` in float32, each addition rounded."""
    xs = list(xs)
    s = np.zeros(size if size is not None else len(xs[0]), dtype=F32)
    for x in xs:
        s = (s + x).astype(F32, copy=False)
    return s


def _sign(t):
    """+1 / -1 / 0 (zero and NaN give 0), as int8."""
    return (t > 0).astype(np.int8) - (t < 0).astype(np.int8)


def decimal_to_f32(text) -> np.float32:
    """A decimal string (or a number) correctly rounded to float32 in one step.

    ``np.float32(float(s))`` rounds twice (decimal -> double -> float) and can be off by one
    ulp for a decimal near a float32 midpoint; this does not."""
    if not isinstance(text, str):
        return F32(text)
    x = float(text)
    if not math.isfinite(x):
        return F32(x)
    exact = Fraction(text.strip())
    c = F32(x)
    if not np.isfinite(c):
        return c
    best, best_err = None, None
    for cand in (np.nextafter(c, F32(-np.inf)), c, np.nextafter(c, F32(np.inf))):
        if not np.isfinite(cand):
            continue
        err = abs(Fraction(float(cand)) - exact)
        if best is None or err < best_err or (
                err == best_err and int(np.array(cand).view(np.uint32)) % 2 == 0):
            best, best_err = cand, err
    return F32(best)


# ---------------------------------------------------------------------------- methods


def negmerge(ts) -> np.ndarray:
    """Kept iff all t_k nonzero with one sign; value = (model-order sum) / float32(n)."""
    n = len(ts)
    ssum = np.zeros(len(ts[0]), dtype=np.int32)
    for t in ts:
        ssum += _sign(t)
    keep = np.abs(ssum) == n
    mean = sum_in_model_order(ts) / F32(n)
    return np.where(keep, mean, F32(0)).astype(F32)


def consensus(ts, min_agree=None) -> np.ndarray:
    n = len(ts)
    k_min = n // 2 + 1 if min_agree is None else int(min_agree)
    if not 1 <= k_min <= n:
        raise ValueError(f"min_agree {k_min} not in 1..{n}")
    pos = sum((t > 0).astype(np.int32) for t in ts)
    neg = sum((t < 0).astype(np.int32) for t in ts)
    maj = np.where(pos > neg, 1, np.where(neg > pos, -1, 0)).astype(np.int8)
    count = np.where(maj > 0, pos, np.where(maj < 0, neg, 0))
    keep = (maj != 0) & (count >= k_min)
    s = sum_in_model_order(np.where(_sign(t) == maj, t, F32(0)) for t in ts) if n else None
    # agreeing values are nonzero and s starts at +0, so adding +0 for the others is exact
    val = s / np.maximum(count, 1).astype(F32)
    return np.where(keep, val, F32(0)).astype(F32)


def uniform(ts) -> np.ndarray:
    return (sum_in_model_order(ts) / F32(len(ts))).astype(F32)


def task_arithmetic(ts, weights=None) -> np.ndarray:
    if weights is None:
        weights = [1.0] * len(ts)
    if len(weights) != len(ts):
        raise ValueError("one weight per model")
    return sum_in_model_order((decimal_to_f32(w) * t).astype(F32) for w, t in zip(weights, ts))


def ties_threshold(t, density) -> tuple:
    """(K, T_k) of methods.md ties step 1-2 for one model's tensor."""
    c = len(t)
    k = math.floor(float(density) * float(c))
    if k == 0:
        return 0, None
    a = np.abs(t)
    return k, np.partition(a, c - k)[c - k]  # K-th largest, duplicates counted


def magnitude_trim(ts, density) -> list:
    """Each t_k with only its elements at or above its threshold T_k kept (ties steps 1-2)."""
    d = float(density)
    if not 0 < d <= 1:
        raise ValueError("density must be in (0, 1]")
    kept = []
    for t in ts:
        k, thr = ties_threshold(t, d)
        if k == 0:
            kept.append(np.zeros_like(t))
        else:
            kept.append(np.where((t != 0) & (np.abs(t) >= thr), t, F32(0)).astype(F32))
    return kept


def elect_disjoint_mean(kept) -> np.ndarray:
    """TIES' sign election (zero sum counts as +) and the mean of the agreeing values."""
    s = sum_in_model_order(kept)
    elected = np.where(s >= 0, 1, -1).astype(np.int8)  # NaN sum -> -1 (s >= 0 is false)
    agree = [(_sign(k) == elected) for k in kept]
    num = sum_in_model_order(np.where(a, k, F32(0)) for a, k in zip(agree, kept))
    count = sum(a.astype(np.int32) for a in agree)
    return (num / np.maximum(count, 1).astype(F32)).astype(F32)


def ties(ts, density=0.2) -> np.ndarray:
    return elect_disjoint_mean(magnitude_trim(ts, density))


def magnitude_prune(ts, density=0.2) -> np.ndarray:
    """Per-tensor top-density trim of each model, then the mean over all n."""
    return uniform(magnitude_trim(ts, density))


def magmax(ts) -> np.ndarray:
    best = ts[0].astype(F32, copy=True)
    for t in ts[1:]:
        best = np.where(np.abs(t) > np.abs(best), t, best)  # strict: first wins on ties
    return best.astype(F32)


# DARE's counter-based generator -----------------------------------------------------------

_M64 = (1 << 64) - 1
_C1, _C2, _GOLD = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15


def mix_int(z: int) -> int:
    z &= _M64
    z = ((z ^ (z >> 30)) * _C1) & _M64
    z = ((z ^ (z >> 27)) * _C2) & _M64
    return z ^ (z >> 31)


def mix_np(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.uint64, copy=True)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    return z ^ (z >> np.uint64(31))


def dare_uniforms(name: str, seed: int, k: int, count: int) -> np.ndarray:
    """u(i) for i = 0..count-1, model index k (0-based), as float64 in [0, 1)."""
    h = mix_int((int(seed) & _M64) ^ xxhash.xxh64(name.encode("utf-8"), seed=0).intdigest())
    hk = mix_int(h + k)
    i1 = np.arange(1, count + 1, dtype=np.uint64)
    z = np.uint64(hk) + i1 * np.uint64(_GOLD)  # wraps modulo 2^64
    return (mix_np(z) >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def dare_rescaled(ts, name: str, drop, seed) -> list:
    """Each t_k with DARE's drops set to 0 and the survivors divided by float32(1 - p)."""
    p = float(drop)
    if not 0 <= p < 1:
        raise ValueError("drop must be in [0, 1)")
    scale = F32(1.0 - p)
    resc = []
    for k, t in enumerate(ts):
        u = dare_uniforms(name, seed, k, len(t))
        resc.append(np.where(u < p, F32(0), t / scale).astype(F32))
    return resc


def dare(ts, name: str, drop=0.9, seed=0) -> np.ndarray:
    return uniform(dare_rescaled(ts, name, drop, seed))


def dare_ties(ts, name: str, drop=0.9, seed=0) -> np.ndarray:
    """DARE's drop and rescale, then TIES' sign election and disjoint mean."""
    return elect_disjoint_mean(dare_rescaled(ts, name, drop, seed))


def sign_histogram(ts) -> np.ndarray:
    """counts[m] for m = 0..n, m = max(#positive, #negative) per element."""
    n = len(ts)
    pos = sum((t > 0).astype(np.int32) for t in ts)
    neg = sum((t < 0).astype(np.int32) for t in ts)
    return np.bincount(np.maximum(pos, neg).reshape(-1), minlength=n + 1)


def merge_tensor(method: str, ts, name: str = "", **params) -> np.ndarray:
    if method == "negmerge":
        return negmerge(ts)
    if method == "consensus":
        return consensus(ts, params.get("min_agree"))
    if method == "uniform":
        return uniform(ts)
    if method == "task-arithmetic":
        return task_arithmetic(ts, params.get("weights"))
    if method == "ties":
        return ties(ts, params.get("density", 0.2))
    if method == "magmax":
        return magmax(ts)
    if method == "dare":
        return dare(ts, name, params.get("drop", 0.9), params.get("seed", 0))
    if method == "dare-ties":
        return dare_ties(ts, name, params.get("drop", 0.9), params.get("seed", 0))
    if method == "magnitude-prune":
        return magnitude_prune(ts, params.get("density", 0.2))
    raise ValueError(f"unknown method {method!r}")


def merge_checkpoints(base, fts, method="negmerge", **params):
    """``base``/``fts``: OrderedDicts name -> (dtype, shape, raw) as load_checkpoint gives.

    Returns OrderedDict name -> float32 tau of the tensor's shape, for every floating
    tensor of the base in base order (all-zero and empty tensors included), as a patch
    decodes it (every zero is +0.0)."""
    out = OrderedDict()
    for name, (dtype, shape, raw) in base.items():
        if dtype not in FLOAT_DTYPES:
            continue
        ts = task_vectors(dtype, raw, [ft[name][2] for ft in fts])
        tau = merge_tensor(method, ts, name, **params) if raw.size else np.zeros(0, F32)
        # as encoded: zero elements are not stored, so a -0.0 (e.g. magmax of signed zeros)
        # decodes as +0.0
        out[name] = np.where(tau == 0, F32(0), tau).astype(F32).reshape(shape)
    return out


def checkpoint_histogram(base, fts) -> np.ndarray:
    n = len(fts)
    total = np.zeros(n + 1, dtype=np.int64)
    for name, (dtype, shape, raw) in base.items():
        if dtype in FLOAT_DTYPES and raw.size:
            total += sign_histogram(task_vectors(dtype, raw, [ft[name][2] for ft in fts]))
    return total


# ---------------------------------------------------------------------------- apply


def apply_ref(base_dtype: str, base_array: np.ndarray, tau_f32: np.ndarray, lam,
              direction: str = "subtract"):
    """``base - lam * tau``: float32 ``base - (lam * tau)`` (two roundings, no FMA), F64 in
    float64, rounded back to the base dtype with RNE.  ``direction="add"`` gives
    ``base + (lam * tau)`` with the same roundings, computed as written here (NegPatch
    subtracts with the negated lambda, which the spec says rounds the same).  Returns the raw storage array
    (BF16 as uint16) of the base's shape.

    ``lam`` may be a decimal string (rounded once to float32 / float64) or a number.
    Elements where ``tau == 0`` are returned bit-identical to the base: this equals the
    arithmetic for every non-NaN base and ``lam >= 0`` (``x - (+0) == x``, including -0.0);
    it differs only for NaN bases (arithmetic would quiet a signalling NaN) and, with
    ``lam < 0``, for a -0.0 base (``-0 - (-0) = +0``)."""
    if direction not in ("subtract", "add"):
        raise ValueError(f"direction {direction!r}")
    shape = np.shape(base_array)
    tau = np.asarray(tau_f32, dtype=F32).reshape(shape)
    with np.errstate(all="ignore"):  # inf - inf etc. are IEEE results, not errors here
        out = _apply_arith(base_dtype, base_array, tau, lam, direction == "add")
    out = np.where(tau == 0, base_array, out)
    return out.astype(np.asarray(base_array).dtype, copy=False).reshape(shape)


def _apply_arith(base_dtype, base_array, tau, lam, add=False):
    if base_dtype == "F64":
        lam64 = np.float64(float(lam))
        prod64 = lam64 * tau.astype(np.float64)
        b64 = np.asarray(base_array, dtype=np.float64)
        out = b64 + prod64 if add else b64 - prod64
    elif base_dtype in ("F32", "F16", "BF16"):
        lam32 = decimal_to_f32(lam)
        b = to_f32(base_dtype, base_array)
        prod = (lam32 * tau).astype(F32)
        out = from_f32(base_dtype, ((b + prod) if add else (b - prod)).astype(F32))
    else:
        raise TypeError(f"apply_ref: {base_dtype} tensors are not patched")
    return out
