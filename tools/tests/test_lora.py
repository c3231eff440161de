"""PEFT LoRA adapter folders as merge inputs (formats/methods.md, "Inputs: PEFT LoRA
adapters"): bit for bit against the NumPy reference (tools/reference/lora_ref.py) for
adapters written in NumPy, mixed with full checkpoints; one clear error for every
unsupported adapter; and adapters made by real PEFT compared with its merge_and_unload()."""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict

import numpy as np
import pytest

import lora_ref
import patch_reader as pr
import safetensors_np as st
from conftest import assert_error, describe_mismatch

F32 = np.float32


def _base(folder, dtype="F32", seed=0):
    """A small model: an embedding, plain and transposed (Conv1D-style) weights, biases,
    a layer norm, a head, an int buffer; odd sizes so tiles end mid-row."""
    rng = np.random.default_rng(seed)
    shapes = OrderedDict([
        ("model.embed_tokens.weight", (97, 24)),
        ("model.layers.0.self_attn.q_proj.weight", (40, 24)),
        ("model.layers.0.self_attn.q_proj.bias", (40,)),
        ("model.layers.0.self_attn.v_proj.weight", (24, 24)),
        ("model.layers.0.mlp.c_fc.weight", (24, 72)),  # (in, out): fan_in_fan_out
        ("model.layers.1.self_attn.q_proj.weight", (40, 24)),
        ("model.layers.1.input_layernorm.weight", (24,)),
        ("lm_head.weight", (11, 24)),
    ])
    tensors = OrderedDict((k, (dtype, st.from_f32(dtype, rng.standard_normal(s).astype(F32))))
                          for k, s in shapes.items())
    tensors["model.position_ids"] = ("I64", np.arange(7, dtype=np.int64))
    path = os.path.join(folder, "base.safetensors")
    st.save_file(path, tensors)
    return path, shapes


def _factors(rng, r, rows_in, rows_out, scale=0.1):
    return (rng.standard_normal((r, rows_in)).astype(F32) * scale,
            rng.standard_normal((rows_out, r)).astype(F32) * scale)


def _adapter(folder, seed, dtype="F32", adapter_name=None, **config):
    """A LoRA adapter on q_proj, v_proj (rank_pattern, alpha_pattern), the embedding, and a
    saved lm_head; with ``fan_in_fan_out`` it adapts the (in, out) c_fc instead."""
    rng = np.random.default_rng(seed)
    r = 4
    modules = OrderedDict()
    if config.get("fan_in_fan_out"):
        modules["model.layers.0.mlp.c_fc"] = _factors(rng, r, 24, 72)
    else:
        modules["model.layers.0.self_attn.q_proj"] = _factors(rng, r, 24, 40)
        modules["model.layers.1.self_attn.q_proj"] = _factors(rng, r, 24, 40)
        modules["model.layers.0.self_attn.v_proj"] = _factors(rng, 2, 24, 24)
        a, b = _factors(rng, r, 97, 24)
        modules["model.embed_tokens"] = ("embedding", a, b)
        config.setdefault("rank_pattern", {"v_proj": 2})
        config.setdefault("alpha_pattern", {"layers.1.self_attn.q_proj": 3.5})
    saved = {"lm_head.weight": rng.standard_normal((11, 24)).astype(F32)}
    return lora_ref.write_adapter(folder, modules, r=r, alpha=8, dtype=dtype,
                                  adapter_name=adapter_name, saved=saved, **config)


def _check(cli, base, inputs, out, method, *opts, **params):
    cli.ok("merge", "--base", base, *inputs, "-o", out, "--method", method, *opts, "--quiet")
    got = pr.read_patch(out).tensors
    ref = lora_ref.merge_inputs(base, inputs, method, **params)
    problems = [x for x in (describe_mismatch(n, got[n], e) for n, e in ref.items()) if x]
    assert not problems, "\n".join(problems[:10])
    return ref


@pytest.mark.parametrize("variant", [
    {}, {"use_rslora": True}, {"fan_in_fan_out": True}, {"adapter_name": "default"},
    {"dtype": "BF16"}, {"dtype": "F16", "use_rslora": True},
], ids=["plain", "rslora", "fan_in_fan_out", "adapter-name", "bf16-factors", "f16-rslora"])
def test_single_adapter_task_vector_is_the_reference_bit_for_bit(cli, tmp_path, variant):
    base, _ = _base(str(tmp_path))
    adapter = _adapter(str(tmp_path / "lora"), seed=1, **variant)
    ref = _check(cli, base, [adapter], str(tmp_path / "p.negpatch"), "task-arithmetic")
    # the update really is scaling * B @ A where adapted, saved - base where saved, else 0
    b, _ = st.load_checkpoint(base)
    assert np.count_nonzero(ref["model.layers.1.input_layernorm.weight"]) == 0
    assert np.count_nonzero(ref["model.layers.0.self_attn.q_proj.bias"]) == 0
    head = ref["lm_head.weight"]
    assert np.count_nonzero(head) == head.size
    if not variant.get("fan_in_fan_out"):
        tensors, _ = st.read_file(os.path.join(adapter, "adapter_model.safetensors"))
        tag = "." + variant["adapter_name"] if variant.get("adapter_name") else ""
        key = f"base_model.model.model.layers.1.self_attn.q_proj.lora_%s{tag}.weight"
        dt = variant.get("dtype", "F32")
        a = st.to_f32(dt, tensors[key % "A"][2])
        bb = st.to_f32(dt, tensors[key % "B"][2])
        scale = 3.5 / (2.0 if variant.get("use_rslora") else 4.0)
        dense = scale * (bb.astype(np.float64) @ a.astype(np.float64))
        np.testing.assert_allclose(ref["model.layers.1.self_attn.q_proj.weight"], dense, rtol=1e-5, atol=1e-7)
    else:
        assert np.count_nonzero(ref["model.layers.0.mlp.c_fc.weight"]) > 0


@pytest.mark.parametrize("method,opts,params", [
    ("negmerge", [], {}), ("ties", ["--density", "0.3"], {"density": 0.3}),
    ("uniform", [], {}), ("dare-ties", ["--drop", "0.5"], {"drop": 0.5}),
    ("magnitude-prune", [], {}), ("consensus", ["--min-agree", "2"], {"min_agree": 2}),
])
def test_adapters_and_checkpoints_merge_together(cli, tmp_path, method, opts, params):
    base, shapes = _base(str(tmp_path))
    b, _ = st.load_checkpoint(base)
    rng = np.random.default_rng(9)
    ft = OrderedDict()
    for name, (dt, shape, raw) in b.items():
        x = st.to_f32(dt, raw) if dt in st.FLOAT_DTYPES else raw
        ft[name] = (dt, (x + rng.standard_normal(shape).astype(F32) * 0.01).astype(F32)
                    if dt in st.FLOAT_DTYPES else raw)
    full = os.path.join(str(tmp_path), "ft.safetensors")
    st.save_file(full, ft)
    inputs = [_adapter(str(tmp_path / "a1"), seed=2), full, _adapter(str(tmp_path / "a2"), seed=3)]
    _check(cli, base, inputs, str(tmp_path / "p.negpatch"), method, *opts, **params)


def test_bf16_base_with_adapters_both_formats(cli, tmp_path):
    base, _ = _base(str(tmp_path), dtype="BF16", seed=4)
    inputs = [_adapter(str(tmp_path / f"a{k}"), seed=10 + k, dtype="BF16") for k in range(3)]
    _check(cli, base, inputs, str(tmp_path / "p.negpatch"), "negmerge")
    h5 = str(tmp_path / "p.h5")
    cli.ok("merge", "--base", base, *inputs, "-o", h5, "--quiet")
    import hdf5_reader
    got = hdf5_reader.read_patch(h5).tensors
    ref = lora_ref.merge_inputs(base, inputs, "negmerge")
    problems = [x for x in (describe_mismatch(n, got[n], e) for n, e in ref.items()) if x]
    assert not problems, "\n".join(problems[:10])


def _edit_config(folder, **changes):
    path = os.path.join(folder, "adapter_config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(path, "w") as f:
        json.dump(cfg, f)


def _rename_keys(folder, rename):
    path = os.path.join(folder, "adapter_model.safetensors")
    tensors, _ = st.read_file(path)
    st.save_file(path, OrderedDict((rename(k), (d, a)) for k, (d, s, a) in tensors.items()))


UNSUPPORTED = [
    ("loha", lambda f: _edit_config(f, peft_type="LOHA"), ("LOHA",)),
    ("ia3", lambda f: _edit_config(f, peft_type="IA3"), ("IA3",)),
    ("dora", lambda f: _edit_config(f, use_dora=True), ("use_dora",)),
    ("bias-all", lambda f: _edit_config(f, bias="all"), ("bias",)),
    ("bin-weights", lambda f: os.replace(os.path.join(f, "adapter_model.safetensors"),
                                         os.path.join(f, "adapter_model.bin")), (".bin",)),
    ("dora-key", lambda f: _rename_keys(f, lambda k: k.replace("q_proj.lora_B.weight", "q_proj.lora_magnitude_vector")
                                        if "layers.0.self_attn.q_proj.lora_B" in k else k), ("magnitude",)),
    ("missing-target", lambda f: _rename_keys(f, lambda k: k.replace("layers.1.", "layers.7.")), ("layers.7", "does not have")),
    ("missing-partner", lambda f: _rename_keys(f, lambda k: k.replace("v_proj.lora_B", "o_proj.lora_B")), ("v_proj", "lora_B")),
    ("wrong-rank", lambda f: _edit_config(f, rank_pattern={}), ("rank",)),
    ("embedding-target-missing", lambda f: _rename_keys(f, lambda k: k.replace("embed_tokens.lora_embedding", "self_attn.k_proj.lora_embedding")), ("k_proj",)),
    ("shape", lambda f: _edit_config(f, fan_in_fan_out=True), ("q_proj", "fan_in_fan_out")),
    ("two-adapters", lambda f: _rename_keys(f, lambda k: k.replace("lora_A.weight", "lora_A.other.weight")), ("several adapters",)),
]


@pytest.mark.parametrize("case,damage,mention", UNSUPPORTED, ids=[c[0] for c in UNSUPPORTED])
def test_unsupported_or_mismatched_adapter_is_one_clear_error(cli, tmp_path, case, damage, mention):
    base, _ = _base(str(tmp_path))
    adapter = _adapter(str(tmp_path / "lora"), seed=5)
    damage(adapter)
    out = str(tmp_path / "p.negpatch")
    # with a copy, so that no single-input warning precedes the error line
    shutil.copytree(adapter, adapter + "-copy")
    r = cli.run("merge", "--base", base, adapter, adapter + "-copy", "-o", out, "--quiet")
    line = assert_error(r, "lora", *mention)
    assert not os.path.exists(out), line
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith(".p.negpatch")]


def test_nonfinite_factor_names_the_adapter_key(cli, tmp_path):
    base, _ = _base(str(tmp_path))
    adapter = _adapter(str(tmp_path / "lora"), seed=6)
    path = os.path.join(adapter, "adapter_model.safetensors")
    tensors, _ = st.read_file(path)
    key = "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight"
    arr = np.array(tensors[key][2], copy=True)
    arr[1, 3] = np.nan
    tensors = OrderedDict((k, (d, arr if k == key else a)) for k, (d, s, a) in tensors.items())
    st.save_file(path, tensors)
    shutil.copytree(adapter, adapter + "-copy")
    r = cli.run("merge", "--base", base, adapter, adapter + "-copy", "-o", str(tmp_path / "p.negpatch"), "--quiet")
    assert_error(r, key, "nan", "element 27")


# ---------------------------------------------------------------------------- real PEFT


def _peft_model(kind, seed):
    import torch
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(61, 16)
            self.q_proj = nn.Linear(16, 24)
            self.v_proj = nn.Linear(16, 16)
            self.c_attn = Conv1D(48, 16)  # weight (16, 48): (in, out)
            self.head = nn.Linear(16, 7)
            self.norm = nn.LayerNorm(16)

        def forward(self, x):
            return self.head(self.norm(self.v_proj(self.embed(x))))

    torch.manual_seed(seed)
    return Tiny()


PEFT_CONFIGS = {
    "linear-embedding-patterns": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "embed"],
                                      rank_pattern={"v_proj": 2}, alpha_pattern={"q_proj": 5},
                                      modules_to_save=["head"]),
    "conv1d-rslora": dict(r=8, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True, use_rslora=True),
}


def _make_peft_adapter(folder, base_model, config, seed):
    import torch
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(base_model, LoraConfig(**config))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05)  # lora_B starts at zero: make it move
    model.save_pretrained(folder)
    merged = model.merge_and_unload()
    return {k: v.detach().numpy().copy() for k, v in merged.state_dict().items()}


@pytest.mark.parametrize("kind", list(PEFT_CONFIGS))
def test_real_peft_adapters_match_reference_and_merge_and_unload(cli, tmp_path, kind):
    import copy
    import torch  # noqa: F401  (installed for the tests by tools/setup --test)
    base_model = _peft_model(kind, seed=0)
    base_state = {k: v.detach().numpy().copy() for k, v in base_model.state_dict().items()}
    base = os.path.join(str(tmp_path), "base.safetensors")
    st.save_file(base, OrderedDict((k, ("F32", v.astype(F32))) for k, v in base_state.items()))
    adapters, merged = [], []
    for k in range(2):
        folder = str(tmp_path / f"adapter-{k}")
        merged.append(_make_peft_adapter(folder, copy.deepcopy(base_model), PEFT_CONFIGS[kind], seed=k + 1))
        adapters.append(folder)
        with open(os.path.join(folder, "adapter_config.json")) as f:
            assert json.load(f)["peft_type"] == "LORA"
    # each adapter alone: bit for bit the reference, and PEFT's own delta to float tolerance
    for folder, state in zip(adapters, merged):
        out = str(tmp_path / (os.path.basename(folder) + ".negpatch"))
        ref = _check(cli, base, [folder], out, "task-arithmetic")
        changed = 0
        for name, tau in ref.items():
            delta = state[name].astype(np.float64) - base_state[name].astype(np.float64)
            np.testing.assert_allclose(tau, delta, rtol=1e-4, atol=2e-6, err_msg=name)
            changed += int(np.count_nonzero(tau))
        assert changed > 0
    # and the two merged with TIES, added to the base as the SemEval system does
    out = str(tmp_path / "ties.negpatch")
    _check(cli, base, adapters, out, "ties", "--density", "0.8", "--direction", "add", density=0.8)
    assert pr.read_patch(out).metadata["direction"] == "add"
