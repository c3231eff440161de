"""NumPy reference of the task vectors of PEFT LoRA adapter folders, bit for bit.

Written from formats/methods.md ("Inputs: PEFT LoRA adapters") alone.  An adapter folder
holds ``adapter_config.json`` and ``adapter_model.safetensors``; for every floating tensor
of the base its task vector is ``c * s`` with ``s`` the rank-ordered float32 sum of
``B[., j] * A[j, .]`` for an adapted weight, ``float32(saved) - float32(base)`` for a
saved whole tensor (``modules_to_save``), and zero otherwise.

``write_adapter`` writes such a folder from NumPy arrays (what PEFT's ``save_pretrained``
writes, key for key), so tests and the LoRA example need no torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import OrderedDict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np as st  # noqa: E402

F32 = np.float32
PREFIX = "base_model.model."
ROLES = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")


class AdapterError(ValueError):
    """An adapter this reference does not read (the message names file and key)."""


def read_config(folder):
    with open(os.path.join(folder, "adapter_config.json"), "rb") as f:
        cfg = json.loads(f.read())
    if cfg.get("peft_type") != "LORA":
        raise AdapterError(f"{folder}: peft_type {cfg.get('peft_type')!r} is not LORA")
    for flag in ("use_dora", "lora_bias"):
        if cfg.get(flag):
            raise AdapterError(f"{folder}: {flag} is not supported")
    if cfg.get("bias", "none") not in ("none", None):
        raise AdapterError(f"{folder}: bias {cfg['bias']!r} is not supported")
    return cfg


def rank_and_scaling(cfg, module):
    """(r, c): the first rank_pattern / alpha_pattern key K (file order) whose
    ``(.*\\.)?(K)$`` matches the module name from its start (``re.match``), else r / lora_alpha; c is
    ``alpha / r`` (``alpha / sqrt(r)`` with use_rslora) in float64, rounded once to float32."""
    def pick(pattern, default):
        for key, value in (pattern or {}).items():
            if re.match(rf"(.*\.)?({key})$", module):  # PEFT's get_pattern_key
                return value
        return default
    r = int(pick(cfg.get("rank_pattern"), cfg["r"]))
    alpha = float(pick(cfg.get("alpha_pattern"), cfg["lora_alpha"]))
    scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    return r, F32(scaling)


def low_rank_product(a, b, c, rows_from_a):
    """``c * s`` with ``s = sum over j in index order of B[row, j] * A[j, col]`` (plain
    weight, (out, in)) or of ``A[j, row] * B[col, j]`` (``rows_from_a``: a weight stored
    transposed, or an embedding), each product and each sum rounded to float32."""
    a = np.asarray(a, dtype=F32)
    b = np.asarray(b, dtype=F32)
    r = a.shape[0]
    if rows_from_a:
        s = np.zeros((a.shape[1], b.shape[0]), dtype=F32)
        for j in range(r):
            s = (s + (a[j, :][:, None] * b[:, j][None, :]).astype(F32)).astype(F32)
    else:
        s = np.zeros((b.shape[0], a.shape[1]), dtype=F32)
        for j in range(r):
            s = (s + (b[:, j][:, None] * a[j, :][None, :]).astype(F32)).astype(F32)
    return (c * s).astype(F32)


def _split_key(key):
    name = key[len(PREFIX):] if key.startswith(PREFIX) else key
    parts = name.split(".")
    roles = [i for i, p in enumerate(parts) if p in ROLES]
    if roles and roles[-1] > 0:
        i = roles[-1]
        return ("factor", ".".join(parts[:i]), parts[i])
    if "modules_to_save" in parts[1:]:
        m = parts.index("modules_to_save")
        return ("saved", ".".join(parts[:m] + parts[m + 2:]), None)
    return ("saved", name, None)


def adapter_task_vectors(base, folder):
    """OrderedDict base tensor name -> flat float32 task vector of the adapter at
    ``folder``, for every floating tensor of ``base`` (``load_checkpoint``'s mapping)."""
    cfg = read_config(folder)
    tensors, _ = st.read_file(os.path.join(folder, "adapter_model.safetensors"))
    factors, saved = {}, {}
    for key, (dtype, shape, raw) in tensors.items():
        kind, target, role = _split_key(key)
        if kind == "factor":
            factors.setdefault(target, {})[role] = st.to_f32(dtype, raw).reshape(shape)
        else:
            saved[target] = (dtype, raw)
    out = OrderedDict()
    for name, (dtype, shape, raw) in base.items():
        if dtype not in st.FLOAT_DTYPES:
            continue
        module = name[:-len(".weight")] if name.endswith(".weight") else None
        if module in factors:
            f = factors[module]
            embedding = "lora_embedding_A" in f
            a, b = (f["lora_embedding_A"], f["lora_embedding_B"]) if embedding else (f["lora_A"], f["lora_B"])
            r, c = rank_and_scaling(cfg, module)
            if a.shape[0] != r:
                raise AdapterError(f"{folder}: {module}: rank {a.shape[0]} but the config says {r}")
            t = low_rank_product(a, b, c, embedding or bool(cfg.get("fan_in_fan_out")))
            if t.shape != tuple(shape):
                raise AdapterError(f"{folder}: {module}: update {t.shape} vs weight {shape}")
            out[name] = t.reshape(-1)
        elif name in saved:
            sd, sraw = saved[name]
            out[name] = (st.to_f32(sd, sraw).reshape(-1) - st.to_f32(dtype, raw).reshape(-1)).astype(F32)
        else:
            out[name] = np.zeros(math.prod(shape), dtype=F32)
    return out


def checkpoint_task_vectors(base, ft):
    """OrderedDict name -> flat float32 ``ft - base`` for every floating tensor."""
    out = OrderedDict()
    for name, (dtype, shape, raw) in base.items():
        if dtype in st.FLOAT_DTYPES:
            out[name] = (st.to_f32(dtype, ft[name][2]).reshape(-1)
                         - st.to_f32(dtype, raw).reshape(-1)).astype(F32)
    return out


def merge_inputs(base_path, inputs, method="negmerge", **params):
    """Reference merge of a mixed list of inputs (checkpoint paths and adapter folders):
    OrderedDict name -> float32 tau of the tensor's shape, as a patch decodes it."""
    import merge_ref as mr
    base, _ = st.load_checkpoint(base_path)
    per_input = []
    for path in inputs:
        if os.path.isfile(os.path.join(path, "adapter_config.json")):
            per_input.append(adapter_task_vectors(base, path))
        else:
            per_input.append(checkpoint_task_vectors(base, st.load_checkpoint(path)[0]))
    out = OrderedDict()
    for name, (dtype, shape, raw) in base.items():
        if dtype not in st.FLOAT_DTYPES:
            continue
        ts = [t[name] for t in per_input]
        tau = mr.merge_tensor(method, ts, name, **params) if raw.size else np.zeros(0, F32)
        out[name] = np.where(tau == 0, F32(0), tau).astype(F32).reshape(shape)
    return out


def write_adapter(folder, modules, r, alpha, dtype="F32", adapter_name=None, saved=None,
                  **config):
    """Write a PEFT-style LoRA adapter folder.

    ``modules``: OrderedDict module name -> (A, B) (``lora_A`` (r, in), ``lora_B`` (out, r))
    or -> ("embedding", A, B) (``lora_embedding_A`` (r, vocab), ``lora_embedding_B``
    (dim, r)); ``saved``: base tensor name -> full array (``modules_to_save``).  Keys are
    ``base_model.model.<module>.lora_A.weight`` (with ``.<adapter_name>`` before
    ``weight`` when given), as PEFT's ``save_pretrained`` writes them."""
    os.makedirs(folder, exist_ok=True)
    tensors = OrderedDict()
    tag = f".{adapter_name}" if adapter_name else ""
    for module, spec in modules.items():
        if isinstance(spec[0], str) and spec[0] == "embedding":
            _, a, b = spec
            tensors[f"{PREFIX}{module}.lora_embedding_A{tag}"] = (dtype, st.from_f32(dtype, np.asarray(a, F32)))
            tensors[f"{PREFIX}{module}.lora_embedding_B{tag}"] = (dtype, st.from_f32(dtype, np.asarray(b, F32)))
        else:
            a, b = spec
            tensors[f"{PREFIX}{module}.lora_A{tag}.weight"] = (dtype, st.from_f32(dtype, np.asarray(a, F32)))
            tensors[f"{PREFIX}{module}.lora_B{tag}.weight"] = (dtype, st.from_f32(dtype, np.asarray(b, F32)))
    for name, arr in (saved or {}).items():
        tensors[f"{PREFIX}{name}"] = (dtype, st.from_f32(dtype, np.asarray(arr, F32)))
    st.save_file(os.path.join(folder, "adapter_model.safetensors"), tensors)
    cfg = {"peft_type": "LORA", "r": int(r), "lora_alpha": alpha, "bias": "none",
           "target_modules": sorted({m.split(".")[-1] for m in modules}),
           "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
           "rank_pattern": {}, "alpha_pattern": {},
           "modules_to_save": sorted({n.rsplit(".", 1)[0] for n in (saved or {})}) or None}
    cfg.update(config)
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return folder
