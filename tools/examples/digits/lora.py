#!/usr/bin/env python3
"""The digits example with LoRA adapters instead of full fine-tuned copies.

1. Train the base MLP of digits.py (64-128-64-10) on scikit-learn's 8x8 digits.
2. Forget run (NegMerge's way): train n rank-r LoRA adapters of every layer in NumPy
   (W + (alpha / r) * B @ A, A random, B zero at the start, as PEFT initialises them) on
   the images of the forget digit, each with its own learning rate, epochs, input noise
   and seed; write them as PEFT adapter folders (adapter_config.json,
   adapter_model.safetensors); merge them with `negpatch merge` (negmerge, ties), apply
   over the lambda grid, and pick lambda by the paper's rule.
3. SemEval-shaped run: two unlearning adapters (the forget digit's images relabelled at
   random, plus cross-entropy on the other digits), one under-forgetting (few steps) and one
   over-forgetting (many steps, a large rate); merged with
   `negpatch merge --method ties --density 0.8 --direction add` and applied at lambda 1:
   the merged model lands between the two.

Usage:  .venv/bin/python tools/examples/digits/lora.py [--n 8] [--rank 4] [--forget 3] ...
Binary: $NEGPATCH_BIN, else .build/release/negpatch, else .build/debug/negpatch.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "reference"))

import digits  # noqa: E402
import lora_ref  # noqa: E402

DEFAULT_WORK = HERE / "work" / "lora"


def lora_forward_params(base: dict, adapter: dict, scaling: float) -> dict:
    """The MLP's weights with each adapter applied: W + scaling * B @ A (float32)."""
    out = dict(base)
    for layer, (a, b) in adapter.items():
        out[f"{layer}.weight"] = (base[f"{layer}.weight"] + np.float32(scaling) * (b @ a)).astype(np.float32)
    return out


def train_lora(base: dict, X, y, *, rank: int, alpha: float, epochs: int, lr: float, rng,
               init_seed: int, noise: float = 0.0, batch: int = 16, ascent=None, retain=None) -> dict:
    """SGD on the LoRA factors only. Plain fine-tuning on (X, y); with ``ascent`` =
    (Xf, yf) and ``retain`` = (Xr, yr), unlearning: minimise the retain cross-entropy
    plus the cross-entropy of the forget images to random wrong labels (a bounded
    unlearning loss; plain gradient ascent diverges). A starts from
    ``init_seed`` (the same for every run, as a fixed PEFT seed gives), B from zero."""
    scaling = alpha / rank
    layers = [k[:-len(".weight")] for k in base if k.endswith(".weight")]
    init = np.random.default_rng(init_seed)
    adapter = {}
    for layer in layers:
        out_f, in_f = base[f"{layer}.weight"].shape
        adapter[layer] = ((init.standard_normal((rank, in_f)) / np.sqrt(in_f)).astype(np.float32),
                          np.zeros((out_f, rank), np.float32))
    for _ in range(epochs):
        batches = []
        if ascent is None:
            order = rng.permutation(len(X))
            batches = [(X[order[s:s + batch]], y[order[s:s + batch]], 1.0) for s in range(0, len(X), batch)]
        else:
            (Xf, yf), (Xr, yr) = ascent, retain
            fo, ro = rng.permutation(len(Xf)), rng.permutation(len(Xr))
            steps = max(1, len(Xf) // batch)
            for s in range(steps):
                idx = fo[s * batch:(s + 1) * batch]
                wrong = (yf[idx] + 1 + rng.integers(0, 9, len(idx))) % 10
                batches.append((Xf[idx], wrong, 1.0))
                r = ro[(s * batch) % len(Xr):][:batch]
                batches.append((Xr[r], yr[r], 1.0))
        for xb, yb, sign in batches:
            if noise:
                xb = (xb + noise * rng.standard_normal(xb.shape)).astype(np.float32)
            params = lora_forward_params(base, adapter, scaling)
            _, g = digits.grads(params, xb, yb)
            for layer, (a, b) in adapter.items():
                gw = np.float32(sign) * g[f"{layer}.weight"]
                ga = np.float32(scaling) * (b.T @ gw)
                gb = np.float32(scaling) * (gw @ a.T)
                adapter[layer] = ((a - np.float32(lr) * ga).astype(np.float32),
                                  (b - np.float32(lr) * gb).astype(np.float32))
    return adapter


def write(folder: Path, adapter: dict, rank: int, alpha: float) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    lora_ref.write_adapter(str(folder), adapter, r=rank, alpha=alpha)
    return folder


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


def run(n: int = 8, rank: int = 4, alpha: float = 8.0, forget: int = 3, grid_step: float = 0.05,
        grid_max: float = 3.0, work: Path | str = DEFAULT_WORK, seed: int = 0,
        binary: Path | str | None = None) -> dict:
    """Both runs. Returns {"rows": forget-run rows (as digits.run), "semeval": rows of
    the SemEval-shaped run, "adapters": [folders], "work": Path, ...}."""
    t0 = time.time()
    binary = Path(binary) if binary else digits.find_binary()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    Xtr, ytr, Xte, yte = digits.load_data(seed)
    rng = np.random.default_rng(seed)
    base = digits.train(digits.init_mlp(rng), Xtr, ytr, epochs=40, lr=2e-3, batch=32, rng=rng)
    base_path = work / "base.safetensors"
    digits.save_checkpoint(base_path, base)
    Xf, yf = Xtr[ytr == forget], ytr[ytr == forget]
    base_forget, base_retain = digits.accuracies(base, Xte, yte, forget)
    dense_bytes = 4 * sum(v.size for v in base.values())

    # ---- forget run: n adapters fine-tuned on the forget digit, then negated
    folders = []
    for k, hp in enumerate(digits.finetune_settings(n, seed)):
        r = np.random.default_rng(hp["seed"])
        adapter = train_lora(base, Xf, yf, rank=rank, alpha=alpha, epochs=hp["epochs"],
                             lr=hp["lr"], rng=r, init_seed=seed + 7, noise=hp["noise"])
        folders.append(write(work / f"lora_{k + 1:02d}", adapter, rank, alpha))
    grid = digits.lambda_grid(grid_step, grid_max)
    sweeper = digits.Sweeper(binary, base_path, grid)
    (work / "patches").mkdir(exist_ok=True)
    rows = [{"method": "base model", "forget_acc": base_forget, "retain_acc": base_retain,
             "lambda": None, "density": None, "patch_bytes": None, "dense_bytes": None}]
    for label, stem, args in (("negmerge (LoRA)", "negmerge", ["--method", "negmerge"]),
                              ("ties (density 0.2, LoRA)", "ties", ["--method", "ties", "--density", "0.2"])):
        patch = work / "patches" / f"{stem}.negpatch"
        digits.cli(binary, "merge", "--base", base_path, *folders, "-o", patch, *args)
        out = work / "applied" / stem
        sweeper.apply(patch, out)
        curve = digits.evaluate_sweep(out, grid, Xte, yte, forget)
        lam, f_acc, r_acc = digits.select_lambda(curve, base_retain)
        rows.append({"method": label, "forget_acc": f_acc, "retain_acc": r_acc, "lambda": lam,
                     "density": digits.patch_density(patch), "patch_bytes": patch.stat().st_size,
                     "dense_bytes": dense_bytes, "patch": patch,
                     "applied": out / f"lambda-{lam}.safetensors"})

    # ---- SemEval-shaped run: two unlearned adapters, merged and added
    Xr, yr = Xtr[ytr != forget], ytr[ytr != forget]
    runs = {"under-forgetting adapter": dict(epochs=1, lr=0.003), "over-forgetting adapter": dict(epochs=1, lr=0.05)}
    semeval = [{"method": "base model", "forget_acc": base_forget, "retain_acc": base_retain}]
    unlearned = []
    for k, (label, hp) in enumerate(runs.items()):
        adapter = train_lora(base, Xf, yf, rank=rank, alpha=alpha, epochs=hp["epochs"], lr=hp["lr"],
                             rng=np.random.default_rng(seed * 1000 + 500 + k), init_seed=seed + 7,
                             ascent=(Xf, yf), retain=(Xr, yr))
        unlearned.append(write(work / f"unlearn_{k + 1}", adapter, rank, alpha))
        f_acc, r_acc = digits.accuracies(lora_forward_params(base, adapter, alpha / rank), Xte, yte, forget)
        semeval.append({"method": label, "forget_acc": f_acc, "retain_acc": r_acc})
    merged = work / "patches" / "semeval-ties-add.negpatch"
    digits.cli(binary, "merge", "--base", base_path, *unlearned, "-o", merged,
               "--method", "ties", "--density", "0.8", "--direction", "add")
    out = work / "applied" / "semeval.safetensors"
    digits.cli(binary, "apply", "--base", base_path, "--patch", merged, "-o", out)
    f_acc, r_acc = digits.accuracies(digits.load_checkpoint(out), Xte, yte, forget)
    semeval.append({"method": "ties 0.8 of both, --direction add, lambda 1", "forget_acc": f_acc,
                    "retain_acc": r_acc, "patch": merged, "applied": out})
    return {"rows": rows, "semeval": semeval, "adapters": folders, "unlearned": unlearned,
            "work": work, "n": n, "rank": rank, "alpha": alpha, "forget": forget,
            "adapter_bytes": sum(folder_bytes(f) for f in folders), "dense_bytes": dense_bytes,
            "base_path": base_path, "seconds": time.time() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="LoRA adapters of the forget run (default 8)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=8.0)
    ap.add_argument("--forget", type=int, default=3, choices=range(10))
    ap.add_argument("--grid-step", type=float, default=0.05)
    ap.add_argument("--grid-max", type=float, default=3.0)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        res = run(n=a.n, rank=a.rank, alpha=a.alpha, forget=a.forget, grid_step=a.grid_step,
                  grid_max=a.grid_max, work=a.work, seed=a.seed)
    except (FileNotFoundError, digits.CLIError, ValueError) as e:
        print(f"lora.py: {e}", file=sys.stderr)
        return 1
    print(f"Forgetting digit {a.forget} with LoRA: n = {a.n} rank-{a.rank} adapters (alpha {a.alpha:g}) "
          f"on every layer, {res['adapter_bytes']:,} bytes of adapter folders in all; "
          f"lambda by the paper's rule over 0..{a.grid_max:g} step {a.grid_step:g}.")
    print(digits.fmt_table(res["rows"]))
    print()
    print("SemEval-shaped: two unlearned LoRA adapters (the digit relabelled at random + retain loss), "
          "merged with TIES and added to the base.")
    print("| model | forget acc | retain acc |")
    print("|---|---|---|")
    for r in res["semeval"]:
        print(f"| {r['method']} | {r['forget_acc']:.3f} | {r['retain_acc']:.3f} |")
    print(f"total {res['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
