"""Checks of the installed Python package, run by test_python_package.py inside the
scratch venv the wheel was installed into, with PATH and LD_LIBRARY_PATH free of the
Swift toolchain. Usage: python wheel_checks.py CHECK WORKDIR. Each check asserts; a
failing one exits non-zero with the traceback.

The models are small Llama-shaped ones made by transformers from a config (nothing is
downloaded): an F32 model with tied embeddings and a BF16 one, both saved sharded,
n = 3 fine-tuned copies each (the base perturbed, with sign-consistent parts so that
NegMerge keeps something), and a patch merged by the bundled CLI.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np

N = 3
LAM = 0.7


def bits(t):
    """A tensor's raw bytes as an integer array (for bit-for-bit comparisons)."""
    import torch

    t = t.detach().contiguous()
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.view(view).numpy()


def assert_same_state(got, expected, what):
    assert list(got) == list(expected) or set(got) == set(expected), f"{what}: names differ"
    for name, t in expected.items():
        g = got[name]
        assert g.dtype == t.dtype and tuple(g.shape) == tuple(t.shape), f"{what}: {name} {g.dtype} {g.shape} vs {t.dtype} {t.shape}"
        gb, eb = bits(g), bits(t)
        bad = np.flatnonzero(gb.reshape(-1) != eb.reshape(-1))
        assert bad.size == 0, f"{what}: {name}: {bad.size} of {gb.size} elements differ bitwise, first at {bad[:5]}"


def model_dir(root, kind):
    return os.path.join(root, kind)


def make(root):
    """Builds the models, the fine-tuned copies, the patches and the CLI-applied folders."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    for kind, dtype, tied in (("f32", torch.float32, True), ("bf16", torch.bfloat16, False)):
        config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                             tie_word_embeddings=tied)
        model = LlamaForCausalLM(config).to(dtype)
        base = os.path.join(root, kind, "base")
        model.save_pretrained(base, max_shard_size="150KB", safe_serialization=True)
        shards = [f for f in os.listdir(base) if f.endswith(".safetensors")]
        assert len(shards) > 1, f"{kind}: expected a sharded checkpoint, got {shards}"
        state = {k: v.clone() for k, v in model.state_dict().items()}
        g = torch.Generator().manual_seed(1)
        agree = {k: (torch.rand(v.shape, generator=g) < 0.3, torch.randint(0, 2, v.shape, generator=g) * 2 - 1)
                 for k, v in state.items() if v.is_floating_point()}
        fts = []
        for k in range(N):
            ft = LlamaForCausalLM(config).to(dtype)
            perturbed = {}
            for name, v in state.items():
                if name in agree:
                    mask, sign = agree[name]
                    step = torch.where(mask, sign * 0.02 * (1 + torch.rand(v.shape, generator=g)),
                                       0.01 * torch.randn(v.shape, generator=g) * (torch.rand(v.shape, generator=g) < 0.2))
                    perturbed[name] = (v.float() + step).to(dtype)
                else:
                    perturbed[name] = v
            ft.load_state_dict(perturbed, strict=False)
            if tied:
                ft.tie_weights()
            path = os.path.join(root, kind, f"ft_{k}")
            ft.save_pretrained(path, max_shard_size="150KB", safe_serialization=True)
            fts.append(path)
        patch = os.path.join(root, kind, "forget.negpatch")
        run("negpatch", "merge", "--base", base, *fts, "-o", patch, "--lambda", "0.9", "-q")
        run("negpatch", "apply", "--base", base, "--patch", patch, "--lambda", str(LAM), "-o",
            os.path.join(root, kind, "applied"), "-q")
        run("negpatch", "apply", "--base", base, "--patch", patch, "-o", os.path.join(root, kind, "applied-default"), "-q")
    with open(os.path.join(root, "made"), "w") as f:
        f.write("ok\n")


def run(*args):
    r = subprocess.run(list(args), capture_output=True, text=True)
    assert r.returncode == 0, f"$ {' '.join(args)}\nexit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def check_environment(root):
    """The package is imported from the scratch venv, and neither the CLI nor the library
    can reach the Swift toolchain."""
    import negpatch

    assert "/opt/swift" not in os.environ.get("PATH", "") and not os.environ.get("LD_LIBRARY_PATH")
    assert os.path.abspath(negpatch.__file__).startswith(os.path.abspath(sys.prefix)), negpatch.__file__
    out = run("negpatch", "--help")
    assert "merge" in out and "apply" in out
    assert shutil.which("negpatch").startswith(os.path.abspath(sys.prefix))
    assert negpatch.binary_path().startswith(os.path.dirname(negpatch.__file__))
    import pydoc

    text = pydoc.render_doc(negpatch, renderer=pydoc.plaintext)
    for word in ("open(", "load_file(", "apply_(", "check_base(", "NegPatchError", "from_pretrained"):
        assert word in text or word in pydoc.render_doc(negpatch.Patch, renderer=pydoc.plaintext) \
            or word in pydoc.render_doc(negpatch.hf, renderer=pydoc.plaintext), f"help(negpatch) lacks {word}"


def check_metadata(root):
    import negpatch

    p = negpatch.open(os.path.join(root, "f32", "forget.negpatch"))
    assert p.method == "negmerge" and p.n == N and p.lam == 0.9 and p.parameters == {}
    assert p.direction == p.metadata.get("direction", "subtract") and p.lossy is False
    assert [os.path.basename(i) for i in p.inputs] == [f"ft_{k}" for k in range(N)], p.inputs
    assert 0 < p.density < 1
    assert "model.embed_tokens.weight" in p.tensors and "lm_head.weight" not in p.tensors
    assert p.shape("model.embed_tokens.weight") == (256, 64) and p.dtype("model.embed_tokens.weight") == "F32"
    p.verify()
    tau = p.tensor("model.layers.0.mlp.up_proj.weight")
    assert tau.dtype == np.float32 and tau.shape == (128, 64)
    # tau against the CLI's export, bit for bit
    exported = os.path.join(root, "tau.safetensors")
    run("negpatch", "export", p.path, "-o", exported)
    from safetensors.numpy import load_file

    dense = load_file(exported)
    for name in p.tensors:
        assert np.array_equal(p.tensor(name).view(np.int32), dense[name].view(np.int32)), name
    try:
        p.shape("nope")
        raise AssertionError("shape of an unknown tensor did not raise")
    except negpatch.NegPatchError as e:
        assert e.code == "invalidArgument" and e.tensor == "nope" and e.file == p.path


def load_state(path, dtype):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(path, torch_dtype=dtype)


def check_apply_model(root):
    """apply_ on a loaded model equals loading the CLI-applied folder, tensor by tensor."""
    import torch

    import negpatch

    for kind, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        p = negpatch.open(os.path.join(root, kind, "forget.negpatch"))
        model = load_state(os.path.join(root, kind, "base"), dtype)
        count = p.apply_(model, lam=LAM)
        assert count == len(p.tensors), (count, len(p.tensors))
        expected = load_state(os.path.join(root, kind, "applied"), dtype)
        assert_same_state(model.state_dict(), expected.state_dict(), f"{kind} apply_(model)")
        if kind == "f32":
            # tied: lm_head is the embedding, patched once, still shared
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        # the recommended lambda by default
        model = load_state(os.path.join(root, kind, "base"), dtype)
        p.apply_(model.state_dict())
        assert_same_state(model.state_dict(), load_state(os.path.join(root, kind, "applied-default"), dtype).state_dict(),
                          f"{kind} apply_(state dict) at the patch's lambda")


def check_from_pretrained(root):
    """hf.from_pretrained gives the logits of the CLI-applied model."""
    import torch
    from transformers import LlamaForCausalLM

    import negpatch

    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))
    for kind in ("f32", "bf16"):
        patched = negpatch.hf.from_pretrained(LlamaForCausalLM, os.path.join(root, kind, "base"),
                                              os.path.join(root, kind, "forget.negpatch"), lam=LAM)
        reference = LlamaForCausalLM.from_pretrained(os.path.join(root, kind, "applied"))
        with torch.no_grad():
            a, b = patched(ids).logits, reference(ids).logits
        assert a.dtype == b.dtype and torch.equal(a, b), f"{kind}: logits differ (max {float((a.float() - b.float()).abs().max())})"
        base = LlamaForCausalLM.from_pretrained(os.path.join(root, kind, "base"))
        with torch.no_grad():
            assert not torch.equal(base(ids).logits, a), f"{kind}: the patch changed nothing"


def check_numpy_and_load_file(root):
    """A numpy state dict gives the same bytes as torch; load_file np and pt too."""
    import torch
    from safetensors.numpy import load_file as st_load_np

    import negpatch

    folder = os.path.join(root, "f32", "base")
    index = json.load(open(os.path.join(folder, "model.safetensors.index.json")))
    arrays = {}
    for shard in sorted(set(index["weight_map"].values())):
        arrays.update(st_load_np(os.path.join(folder, shard)))
    p = negpatch.open(os.path.join(root, "f32", "forget.negpatch"))
    assert p.apply_(arrays, lam=LAM) == len(p.tensors)
    model = load_state(folder, torch.float32)
    p.apply_(model, lam=LAM)
    state = model.state_dict()
    for name, a in arrays.items():
        assert a.tobytes() == state[name].numpy().tobytes(), f"numpy and torch differ on {name}"
    loaded = negpatch.load_file(folder, p, lam=LAM)
    assert set(loaded) == set(arrays)
    for name, a in arrays.items():
        assert loaded[name].tobytes() == a.tobytes(), f"load_file np differs on {name}"
    for kind in ("f32", "bf16"):
        pt = negpatch.load_file(os.path.join(root, kind, "base"), os.path.join(root, kind, "forget.negpatch"), lam=LAM,
                                framework="pt")
        expected = load_state(os.path.join(root, kind, "applied"), None).state_dict()
        assert_same_state({k: v for k, v in pt.items()}, {k: v for k, v in expected.items() if k in pt}, f"{kind} load_file pt")
    # non-contiguous targets go through a host copy and come back patched the same
    base = load_state(folder, torch.float32).state_dict()
    strided = {k: (v.t().contiguous().t() if v.dim() == 2 else v.clone()) for k, v in base.items()}
    assert not strided["model.layers.0.mlp.up_proj.weight"].is_contiguous()
    p.apply_(strided, lam=LAM)
    assert_same_state({k: strided[k] for k in p.tensors}, {k: state[k] for k in p.tensors}, "non-contiguous state dict")


def check_refusals(root):
    """A wrong base, a missing tensor, a wrong dtype and a tampered signed patch are refused
    with nothing changed."""
    import torch
    from transformers import LlamaForCausalLM

    import negpatch

    patch_path = os.path.join(root, "f32", "forget.negpatch")
    p = negpatch.open(patch_path)
    wrong = load_state(os.path.join(root, "f32", "ft_0"), torch.float32)
    before = {k: v.clone() for k, v in wrong.state_dict().items()}
    try:
        p.apply_(wrong)
        raise AssertionError("apply_ to a fine-tuned copy was not refused")
    except negpatch.NegPatchError as e:
        assert e.code == "mismatch" and "fingerprint differs" in e.message and e.tensor, e
    assert_same_state(wrong.state_dict(), before, "refused model")
    for path in (os.path.join(root, "f32", "ft_0"),):
        try:
            p.check_base(path)
            raise AssertionError("check_base of a fine-tuned copy passed")
        except negpatch.NegPatchError as e:
            assert e.code == "mismatch" and e.file == path, e
        try:
            negpatch.hf.from_pretrained(LlamaForCausalLM, path, p)
            raise AssertionError("from_pretrained on the wrong base passed")
        except negpatch.NegPatchError as e:
            assert e.code == "mismatch", e
    p.check_base(os.path.join(root, "f32", "base"))
    state = load_state(os.path.join(root, "f32", "base"), torch.float32).state_dict()
    name = p.tensors[3]
    partial = {k: v for k, v in state.items() if k != name}
    try:
        p.apply_(partial, check_base=False)
        raise AssertionError("a missing tensor was not refused")
    except negpatch.NegPatchError as e:
        assert e.code == "mismatch" and e.tensor == name and "missing from the target" in e.message, e
    halves = {k: v.half() for k, v in state.items()}
    try:
        p.apply_(halves, check_base=False)
        raise AssertionError("a wrong dtype was not refused")
    except negpatch.NegPatchError as e:
        assert e.code == "mismatch" and "F32" in e.message and "F16" in e.message, e
    # signatures
    signed = os.path.join(root, "signed.negpatch")
    shutil.copy(patch_path, signed)
    key = os.path.join(root, "team.key")
    if not os.path.exists(key):
        run("negpatch", "keygen", "-o", key)
    run("negpatch", "sign", signed, "--key", key)
    assert negpatch.open(signed, trusted_keys=[key + ".pub"]).n == N
    with open(signed, "r+b") as f:
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 1]))
    for attempt in (lambda: negpatch.open(signed, trusted_keys=[key + ".pub"]),
                    lambda: negpatch.hf.from_pretrained(LlamaForCausalLM, os.path.join(root, "f32", "base"), signed,
                                                        trusted_keys=[key + ".pub"])):
        try:
            attempt()
            raise AssertionError("a tampered signed patch was opened")
        except negpatch.NegPatchError as e:
            assert e.code == "untrusted" and "changed after signing" in e.message and e.file == signed, e
    try:
        negpatch.open(os.path.join(root, "missing.negpatch"))
        raise AssertionError("a missing patch was opened")
    except negpatch.NegPatchError as e:
        assert e.code == "io" and e.file.endswith("missing.negpatch"), e


def check_cli_wrappers(root):
    """negpatch.merge and negpatch.apply run the bundled CLI and give its files."""
    import negpatch

    base = os.path.join(root, "bf16", "base")
    fts = [os.path.join(root, "bf16", f"ft_{k}") for k in range(N)]
    out = os.path.join(root, "wrapped.negpatch")
    for stale in (out, os.path.join(root, "wrapped-applied"), os.path.join(root, "x.negpatch")):
        shutil.rmtree(stale, ignore_errors=True) if os.path.isdir(stale) else (os.path.exists(stale) and os.remove(stale))
    negpatch.merge(base, fts, out, lam=0.9)
    ref = os.path.join(root, "bf16", "forget.negpatch")
    assert open(out, "rb").read() != b"" and negpatch.open(out).tensors == negpatch.open(ref).tensors
    applied = os.path.join(root, "wrapped-applied")
    negpatch.apply(base, ref, applied, lam=LAM)
    for name in sorted(os.listdir(applied)):
        assert open(os.path.join(applied, name), "rb").read() == open(os.path.join(root, "bf16", "applied", name), "rb").read(), name
    missing = os.path.join(root, "no-such-ft")
    try:
        negpatch.merge(base, [fts[0], missing], os.path.join(root, "x.negpatch"))
        raise AssertionError("a merge with a missing input passed")
    except negpatch.NegPatchError as e:
        assert e.code == "cli" and missing in e.message and "\n" not in e.message, e
    assert not os.path.exists(os.path.join(root, "x.negpatch"))


def check_readme_example(root):
    """The README's Python example, run as written, in a folder holding what it names: a
    signed forget.negpatch, its base/ folder and team.key.pub."""
    import re

    import torch

    readme = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md"), encoding="utf-8").read()
    section = readme[readme.index("## Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    folder = os.path.join(root, "readme")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    shutil.copytree(os.path.join(root, "f32", "base"), os.path.join(folder, "base"))
    shutil.copy(os.path.join(root, "f32", "forget.negpatch"), os.path.join(folder, "forget.negpatch"))
    run("negpatch", "keygen", "-o", os.path.join(folder, "team.key"))
    run("negpatch", "sign", os.path.join(folder, "forget.negpatch"), "--key", os.path.join(folder, "team.key"))
    here = os.getcwd()
    os.chdir(folder)
    try:
        scope = {}
        exec(compile(code, "README.md (Python example)", "exec"), scope)
    finally:
        os.chdir(here)
    # What it ends with: the base loaded and patched with the patch's own lambda, and the
    # tensors load_file gives, both equal to the CLI's apply of the same patch.
    expected = load_state(os.path.join(root, "f32", "applied-default"), torch.float32).state_dict()
    assert_same_state(scope["model"].state_dict(), expected, "README example: from_pretrained")
    tensors = scope["tensors"]
    assert tensors, "README example: load_file gave no tensors"
    assert_same_state(tensors, {name: expected[name] for name in tensors}, "README example: load_file")


if __name__ == "__main__":
    check, root = sys.argv[1], sys.argv[2]
    {"make": make, "environment": check_environment, "metadata": check_metadata, "apply_model": check_apply_model,
     "from_pretrained": check_from_pretrained, "numpy": check_numpy_and_load_file, "refusals": check_refusals,
     "cli_wrappers": check_cli_wrappers, "readme_example": check_readme_example}[check](root)
    print(f"{check}: ok")
