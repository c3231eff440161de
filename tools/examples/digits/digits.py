#!/usr/bin/env python3
"""Forget one handwritten digit by task negation, end to end with the `negpatch` CLI.

1. Train a small MLP (64-128-64-10, ReLU, softmax; numpy, fixed seeds) on a train split
   of scikit-learn's 8x8 digits.
2. Fine-tune n copies of it on the images of ONE class (the forget class), cross-entropy
   to their true label, each copy with its own learning rate, epoch count, input noise and
   shuffling seed (as NegMerge fine-tunes its copies with different hyperparameters).
3. Write base.safetensors and ft_01..ft_NN.safetensors (F32), then drive the CLI:
   `negpatch merge` (negmerge, uniform, ties, magmax, and task arithmetic on each single
   model) and `negpatch apply` over a lambda grid.
4. Evaluate every applied checkpoint on the test split (forget-class accuracy, accuracy on
   the other classes = retain) and pick lambda as the NegMerge paper does: the lowest
   forget accuracy among lambdas whose retain accuracy is >= 95% of the base model's
   (ties: the smallest lambda).

Usage:  .venv/bin/python tools/examples/digits/digits.py [--n 12] [--forget 3] ...
Binary: $NEGPATCH_BIN, else .build/release/negpatch, else .build/debug/negpatch.

`run(...)` returns the table rows as dicts (used by tools/tests/test_digits_example.py);
`negmerge_reference`, `apply_reference` and `load_checkpoint` give the NumPy reference of
formats/methods.md for bit-exact checks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
DEFAULT_WORK = HERE / "work"

HIDDEN = (128, 64)          # 64-128-64-10
RETAIN_FRACTION = 0.95      # the paper's lambda-selection rule


# --------------------------------------------------------------------------- binary

def find_binary() -> Path:
    """$NEGPATCH_BIN, else .build/release/negpatch, else .build/debug/negpatch."""
    env = os.environ.get("NEGPATCH_BIN")
    if env:
        p = Path(env)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise FileNotFoundError(f"NEGPATCH_BIN={env} is not an executable file")
        return p
    for sub in ("release", "debug"):
        p = REPO / ".build" / sub / "negpatch"
        if p.is_file() and os.access(p, os.X_OK):
            return p
    raise FileNotFoundError(
        "negpatch binary not found: set NEGPATCH_BIN or build it "
        f"(looked in {REPO}/.build/release and {REPO}/.build/debug)")


class CLIError(RuntimeError):
    def __init__(self, cmd: list[str], proc: subprocess.CompletedProcess):
        self.cmd, self.proc = cmd, proc
        super().__init__(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                         f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}")

    def short(self) -> str:
        """The command with long file lists elided, and the first line of stderr."""
        shown, files = [], 0
        for a in self.cmd[1:]:
            if a.endswith(".safetensors") and shown and shown[-1] != "--base":
                files += 1
                if files > 2:
                    continue
            shown.append(Path(a).name if "/" in a else a)
        if files > 2:
            i = max(j for j, a in enumerate(shown) if a.endswith(".safetensors"))
            shown.insert(i + 1, f"... ({files} fine-tuned)")
        err = (self.proc.stderr.strip() or self.proc.stdout.strip()).splitlines()
        return (f"`negpatch {' '.join(shown)}` -> exit {self.proc.returncode}: "
                f"{err[0] if err else '(no message)'}")


def cli(binary: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(binary), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise CLIError(cmd, proc)
    return proc


# --------------------------------------------------------------------------- data

def load_data(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y,
                                          random_state=seed)
    return Xtr, ytr, Xte, yte


# --------------------------------------------------------------------------- model

def n_layers(params: dict) -> int:
    return len([k for k in params if k.endswith(".weight")])


def init_mlp(rng: np.random.Generator) -> dict:
    sizes = (64, *HIDDEN, 10)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        # He init; torch layout: weight is [out, in]
        params[f"layers.{i}.weight"] = (rng.standard_normal((fan_out, fan_in))
                                        * np.sqrt(2.0 / fan_in)).astype(np.float32)
        params[f"layers.{i}.bias"] = np.zeros(fan_out, np.float32)
    return params


def forward(params: dict, X: np.ndarray, keep: bool = False):
    L = n_layers(params)
    h = X
    acts = [h]
    for i in range(L):
        z = h @ params[f"layers.{i}.weight"].T + params[f"layers.{i}.bias"]
        h = np.maximum(z, 0) if i < L - 1 else z
        acts.append(h)
    return (h, acts) if keep else h


def predict(params: dict, X: np.ndarray) -> np.ndarray:
    return np.argmax(forward(params, X), axis=1)


def grads(params: dict, X: np.ndarray, y: np.ndarray, weight_decay: float = 0.0):
    L = n_layers(params)
    logits, acts = forward(params, X, keep=True)
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y] + 1e-12).mean()
    d = p
    d[np.arange(len(y)), y] -= 1
    d /= len(y)
    g = {}
    for i in reversed(range(L)):
        W = params[f"layers.{i}.weight"]
        g[f"layers.{i}.weight"] = (d.T @ acts[i]).astype(np.float32)
        g[f"layers.{i}.bias"] = d.sum(axis=0).astype(np.float32)
        if weight_decay:
            g[f"layers.{i}.weight"] += np.float32(weight_decay) * W
        if i > 0:
            d = (d @ W) * (acts[i] > 0)
    return loss, g


def train(params: dict, X, y, *, epochs: int, lr: float, batch: int, rng,
          noise: float = 0.0, optimizer: str = "adam", weight_decay: float = 0.0) -> dict:
    params = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    t = 0
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for s in range(0, len(X), batch):
            idx = order[s:s + batch]
            xb = X[idx]
            if noise:
                xb = (xb + noise * rng.standard_normal(xb.shape)).astype(np.float32)
            _, g = grads(params, xb, y[idx], weight_decay)
            t += 1
            for k in params:
                if optimizer == "sgd":
                    params[k] -= np.float32(lr) * g[k]
                else:
                    m[k] = b1 * m[k] + (1 - b1) * g[k]
                    v2[k] = b2 * v2[k] + (1 - b2) * g[k] * g[k]
                    mh = m[k] / (1 - b1 ** t)
                    vh = v2[k] / (1 - b2 ** t)
                    params[k] = (params[k] - lr * mh / (np.sqrt(vh) + eps)).astype(np.float32)
    return params


def finetune_settings(n: int, seed: int) -> list[dict]:
    """n distinct hyperparameter settings: learning rate, epochs, input noise, seed."""
    lrs = (0.1, 0.2, 0.4)
    epochs = (10, 20, 30, 40)
    noises = (0.1, 0.2, 0.3)
    out = []
    for k in range(n):
        out.append({"lr": lrs[(k // len(noises)) % len(lrs)],
                    "epochs": epochs[k % len(epochs)],
                    "noise": noises[k % len(noises)],
                    "seed": seed * 1000 + 17 + k})
    return out


def accuracies(params: dict, X, y, forget: int) -> tuple[float, float]:
    pred = predict(params, X)
    f = y == forget
    return float((pred[f] == y[f]).mean()), float((pred[~f] == y[~f]).mean())


# --------------------------------------------------------------------------- io

def save_checkpoint(path: Path, params: dict) -> None:
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in params.items()},
              str(path))


def load_checkpoint(path: Path) -> dict:
    from safetensors.numpy import load_file
    return load_file(str(path))


def patch_index(path: Path) -> dict:
    """The JSON index of a .negpatch file (formats/negpatch-v1.md sections 2-3)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(size - 32)
        footer = f.read(32)
        off, length = struct.unpack("<QQ", footer[:16])
        if footer[24:] != b"NEGPATCH":
            raise ValueError(f"{path}: not a negpatch file")
        f.seek(off)
        return json.loads(f.read(length))


def patch_density(path: Path) -> float:
    tensors = patch_index(path)["tensors"]
    return sum(t["nonzeros"] for t in tensors) / sum(t["elements"] for t in tensors)


# --------------------------------------------------------------------------- reference

def task_vectors(base: dict, fts: list[dict]) -> dict:
    return {k: np.stack([ft[k].astype(np.float32) - base[k].astype(np.float32)
                         for ft in fts]) for k in base}


def negmerge_reference(base: dict, fts: list[dict]) -> dict:
    """NegMerge exactly as formats/methods.md: keep where all n are nonzero with one
    sign; value = float32 sum in model order / float32(n)."""
    n = np.float32(len(fts))
    tau = {}
    for k, t in task_vectors(base, fts).items():
        keep = np.abs(np.sign(t).sum(axis=0)) == len(fts)
        s = np.zeros(t.shape[1:], np.float32)
        for tk in t:                      # sum in model order, float32 roundings
            s = s + tk
        tau[k] = np.where(keep, s / n, np.float32(0)).astype(np.float32)
    return tau


def uniform_reference(base: dict, fts: list[dict]) -> dict:
    n = np.float32(len(fts))
    tau = {}
    for k, t in task_vectors(base, fts).items():
        s = np.zeros(t.shape[1:], np.float32)
        for tk in t:
            s = s + tk
        tau[k] = (s / n).astype(np.float32)
    return tau


def ties_reference(base: dict, fts: list[dict], density: float | str = 0.2) -> dict:
    """TIES with mergekit's per-tensor trim, exactly as formats/methods.md."""
    d = float(density)
    tau = {}
    for k, t in task_vectors(base, fts).items():
        flat = t.reshape(len(fts), -1)
        K = int(np.floor(np.float64(d) * flat.shape[1]))
        kept = np.zeros(flat.shape, bool)
        if K > 0:
            for j, tj in enumerate(flat):
                T = np.sort(np.abs(tj))[::-1][K - 1]
                kept[j] = (tj != 0) & (np.abs(tj) >= T)
        zero = np.float32(0)
        S = np.zeros(flat.shape[1], np.float32)
        for j in range(len(fts)):
            S = S + np.where(kept[j], flat[j], zero)
        positive = S >= 0
        acc = np.zeros(flat.shape[1], np.float32)
        cnt = np.zeros(flat.shape[1], np.int64)
        for j in range(len(fts)):
            agree = kept[j] & ((flat[j] > 0) == positive)
            acc = acc + np.where(agree, flat[j], zero)
            cnt += agree
        tau[k] = (acc / np.maximum(cnt, 1).astype(np.float32)).reshape(t.shape[1:])
    return tau


def magmax_reference(base: dict, fts: list[dict]) -> dict:
    """Per element the t_k with the largest |t_k| (first in model order on ties)."""
    tau = {}
    for k, t in task_vectors(base, fts).items():
        i = np.argmax(np.abs(t), axis=0)
        tau[k] = np.take_along_axis(t, i[None], axis=0)[0].astype(np.float32)
    return tau


def task_arithmetic_reference(base: dict, fts: list[dict], weights) -> dict:
    """Sum in model order of float32(w_k) * t_k."""
    tau = {}
    for k, t in task_vectors(base, fts).items():
        s = np.zeros(t.shape[1:], np.float32)
        for w, tk in zip(weights, t):
            s = s + np.float32(w) * tk
        tau[k] = s
    return tau


def apply_reference(base: dict, tau: dict, lam: float | str) -> dict:
    """theta = base - (float32(lambda) * tau), float32, two roundings."""
    lam32 = np.float32(float(lam))
    return {k: (base[k] - lam32 * tau[k]).astype(np.float32) for k in base}


def density_of(tau: dict) -> float:
    return sum(int(np.count_nonzero(v)) for v in tau.values()) / sum(v.size for v in tau.values())


# --------------------------------------------------------------------------- selection

def lambda_grid(step: float, maximum: float) -> list[str]:
    count = int(round(maximum / step))
    vals = []
    for i in range(count + 1):
        s = f"{round(i * step, 10):.10f}".rstrip("0").rstrip(".")
        vals.append(s if s else "0")
    return vals


def select_lambda(results: list[tuple[str, float, float]], base_retain: float):
    """results: (lambda string, forget acc, retain acc) in grid order. Lowest forget acc
    among lambdas with retain >= 0.95 * base retain; ties: smallest lambda."""
    ok = [r for r in results if r[2] >= RETAIN_FRACTION * base_retain]
    if not ok:
        return None
    return min(ok, key=lambda r: (r[1], float(r[0])))


# --------------------------------------------------------------------------- pipeline

def build_models(work: Path, n: int, forget: int, seed: int, verbose: bool = True):
    """Train the base and n fine-tuned copies; write them into `work`. Returns data."""
    Xtr, ytr, Xte, yte = load_data(seed)
    rng = np.random.default_rng(seed)
    base = train(init_mlp(rng), Xtr, ytr, epochs=40, lr=2e-3, batch=32, rng=rng)
    Xf, yf = Xtr[ytr == forget], ytr[ytr == forget]
    fts = []
    for k, hp in enumerate(finetune_settings(n, seed)):
        r = np.random.default_rng(hp["seed"])
        fts.append(train(base, Xf, yf, epochs=hp["epochs"], lr=hp["lr"], batch=16,
                         rng=r, noise=hp["noise"], optimizer="sgd"))
    work.mkdir(parents=True, exist_ok=True)
    save_checkpoint(work / "base.safetensors", base)
    paths = []
    for k, ft in enumerate(fts, 1):
        p = work / f"ft_{k:02d}.safetensors"
        save_checkpoint(p, ft)
        paths.append(p)
    return {"base": base, "fts": fts, "ft_paths": paths, "Xte": Xte, "yte": yte,
            "Xtr": Xtr, "ytr": ytr}


# --------------------------------------------------------------------------- CLI driver

METHODS = (
    # (row label, patch stem, extra merge arguments)
    ("negmerge", "negmerge", ["--method", "negmerge"]),
    ("uniform", "uniform", ["--method", "uniform"]),
    ("ties (density 0.2)", "ties", ["--method", "ties", "--density", "0.2"]),
    ("magmax", "magmax", ["--method", "magmax"]),
)


class Sweeper:
    """Applies a patch over the lambda grid: one `apply` with a comma-separated lambda
    list (the sweep) when the CLI supports it, else one `apply` per lambda."""

    def __init__(self, binary: Path, base: Path, grid: list[str]):
        self.binary, self.base, self.grid = binary, base, grid
        self.mode = None          # "sweep" or "single", decided on first use
        self.note = None

    def _single(self, patch: Path, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        for lam in self.grid:
            cli(self.binary, "apply", "--base", self.base, "--patch", patch,
                "--lambda", lam, "-o", out / f"lambda-{lam}.safetensors")

    def _sweep(self, patch: Path, out: Path) -> None:
        cli(self.binary, "apply", "--base", self.base, "--patch", patch,
            "--lambda", ",".join(self.grid), "-o", out)

    def _check(self, out: Path) -> None:
        missing = [lam for lam in self.grid
                   if not (out / f"lambda-{lam}.safetensors").is_file()]
        if missing:
            raise CLIError(f"apply wrote no checkpoint for lambda {missing[:5]} in {out}")

    def apply(self, patch: Path, out: Path) -> None:
        if out.exists():
            shutil.rmtree(out)
        if self.mode is None:
            try:
                self._sweep(patch, out)
                self._check(out)
                self.mode = "sweep"
                return
            except CLIError as e:
                self.mode = "single"
                self.note = ("lambda sweep failed, fell back to one `apply` per lambda: "
                             + e.short())
                if out.exists():
                    shutil.rmtree(out)
        if self.mode == "sweep":
            self._sweep(patch, out)
        else:
            self._single(patch, out)
        self._check(out)


def evaluate_sweep(out: Path, grid: list[str], Xte, yte, forget: int):
    res = []
    for lam in grid:
        params = load_checkpoint(out / f"lambda-{lam}.safetensors")
        res.append((lam, *accuracies(params, Xte, yte, forget)))
    return res


def fmt_table(rows: list[dict]) -> str:
    head = ("method", "forget acc", "retain acc", "lambda", "density",
            "patch bytes", "dense bytes")
    lines = [head]
    for r in rows:
        lines.append((
            r["method"], f"{r['forget_acc']:.3f}", f"{r['retain_acc']:.3f}",
            "-" if r["lambda"] is None else r["lambda"],
            "-" if r["density"] is None else f"{r['density']:.3f}",
            "-" if r["patch_bytes"] is None else f"{r['patch_bytes']:,}",
            "-" if r["dense_bytes"] is None else f"{r['dense_bytes']:,}",
        ))
    w = [max(len(l[i]) for l in lines) for i in range(len(head))]
    out = []
    for j, l in enumerate(lines):
        cells = [c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(l)]
        out.append("| " + " | ".join(cells) + " |")
        if j == 0:
            out.append("|" + "|".join("-" * (x + 2) for x in w) + "|")
    return "\n".join(out)


def run(n: int = 12, forget: int = 3, grid_step: float = 0.05, grid_max: float = 3.0,
        work: Path | str = DEFAULT_WORK, seed: int = 0, values: str | None = None,
        binary: Path | str | None = None, task_arithmetic: bool = True,
        verbose: bool = False) -> dict:
    """The whole example. Returns {"rows": [...], "notes": [...], "work": Path,
    "grid": [...], "base_retain": float, ...}; each row is a dict with method,
    forget_acc, retain_acc, lambda (string as passed to the CLI, None for the base),
    density, patch_bytes, dense_bytes, patch (Path) and applied (Path of the checkpoint
    at the chosen lambda), curve (lambda, forget, retain for the whole grid)."""
    t0 = time.time()
    binary = Path(binary) if binary else find_binary()
    work = Path(work)
    if n < 2:
        raise ValueError("--n must be at least 2")
    if not (grid_step > 0 and grid_max >= 0):
        raise ValueError("--grid-step must be > 0 and --grid-max >= 0")
    # fresh work folder contents (only what this script writes)
    for sub in ("patches", "applied"):
        if (work / sub).exists():
            shutil.rmtree(work / sub)
    for old in work.glob("ft_*.safetensors") if work.exists() else []:
        old.unlink()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)

    data = build_models(work, n, forget, seed)
    t_train = time.time() - t0
    log(f"trained base and {n} fine-tuned copies in {t_train:.1f} s")
    base_path = work / "base.safetensors"
    Xte, yte = data["Xte"], data["yte"]
    base_forget, base_retain = accuracies(data["base"], Xte, yte, forget)
    dense_bytes = 4 * sum(v.size for v in data["base"].values())
    grid = lambda_grid(grid_step, grid_max)
    sweeper = Sweeper(binary, base_path, grid)
    (work / "patches").mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    def merge(stem: str, args: list[str]) -> Path:
        patch = work / "patches" / f"{stem}.negpatch"
        cli(binary, "merge", "--base", base_path, *data["ft_paths"], "-o", patch, *args)
        return patch

    def measure(label: str, patch: Path) -> dict:
        out = work / "applied" / patch.stem
        sweeper.apply(patch, out)
        curve = evaluate_sweep(out, grid, Xte, yte, forget)
        lam, f_acc, r_acc = select_lambda(curve, base_retain)
        return {"method": label, "forget_acc": f_acc, "retain_acc": r_acc, "lambda": lam,
                "density": patch_density(patch), "patch_bytes": patch.stat().st_size,
                "dense_bytes": dense_bytes, "patch": patch,
                "applied": out / f"lambda-{lam}.safetensors", "curve": curve}

    rows = [{"method": "base model", "forget_acc": base_forget, "retain_acc": base_retain,
             "lambda": None, "density": None, "patch_bytes": None, "dense_bytes": None,
             "patch": None, "applied": base_path, "curve": None}]

    # Lossy hook: `--values f16` adds a row per method, but only if the CLI accepts it.
    lossy = None
    if values:
        probe = work / "patches" / f"probe-{values}.negpatch"
        proc = cli(binary, "merge", "--base", base_path, *data["ft_paths"], "-o", probe,
                   "--method", "negmerge", "--values", values, check=False)
        if proc.returncode == 0:
            lossy = values
        else:
            notes.append(f"no lossy rows: `merge --values {values}` is not accepted: "
                         + CLIError([str(binary), "merge", "--values", values], proc)
                         .short().split(": ", 1)[1])
        if probe.exists():
            probe.unlink()

    for label, stem, args in METHODS:
        try:
            patch = merge(stem, args)
        except CLIError as e:
            if stem == "negmerge":
                raise
            notes.append(f"{label}: skipped, {e.short()}")
            continue
        rows.append(measure(label, patch))
        log(f"{label}: done ({time.time() - t0:.1f} s)")
        if lossy:
            try:
                rows.append(measure(f"{label} [{lossy}]",
                                    merge(f"{stem}-{lossy}", args + ["--values", lossy])))
            except CLIError as e:
                notes.append(f"{label} [{lossy}]: skipped, {e.short()}")

    if task_arithmetic:
        singles = []
        for k in range(n):
            w = ",".join("1" if j == k else "0" for j in range(n))
            try:
                patch = merge(f"task-arithmetic-{k + 1:02d}",
                              ["--method", "task-arithmetic", "--weights", w])
            except CLIError as e:
                notes.append(f"task arithmetic: skipped, {e.short()}")
                break
            r = measure("task arithmetic (best single)", patch)
            r["model"] = k + 1
            singles.append(r)
    if task_arithmetic and singles:
        # same rule across models: lowest forget acc; ties: higher retain, then first model
        best = min(singles, key=lambda r: (r["forget_acc"], -r["retain_acc"], r["model"]))
        best["method"] = f"task arithmetic (best single: ft_{best['model']:02d})"
        rows.append(best)
        log(f"task arithmetic: done ({time.time() - t0:.1f} s)")
        if lossy:
            w = ",".join("1" if j == best["model"] - 1 else "0" for j in range(n))
            try:
                patch = merge(f"task-arithmetic-{best['model']:02d}-{lossy}",
                              ["--method", "task-arithmetic", "--weights", w,
                               "--values", lossy])
                rows.append(measure(f"{best['method']} [{lossy}]", patch))
            except CLIError as e:
                notes.append(f"task arithmetic [{lossy}]: skipped, {e.short()}")

    if sweeper.note:
        notes.append(sweeper.note)
    return {"rows": rows, "notes": notes, "work": work, "grid": grid,
            "base_forget": base_forget, "base_retain": base_retain, "binary": binary,
            "n": n, "forget": forget, "seed": seed, "apply_mode": sweeper.mode,
            "test_forget": int((yte == forget).sum()), "test_retain": int((yte != forget).sum()),
            "seconds": time.time() - t0, "train_seconds": t_train,
            "settings": finetune_settings(n, seed)}


# --------------------------------------------------------------------------- reference check

def reference_vector(result: dict, row: dict) -> dict:
    """The NumPy reference task vector (formats/methods.md) for a table row whose method
    has one here: negmerge, uniform, ties, magmax, task arithmetic (single model)."""
    work = Path(result["work"])
    base = load_checkpoint(work / "base.safetensors")
    fts = [load_checkpoint(work / f"ft_{k:02d}.safetensors")
           for k in range(1, result["n"] + 1)]
    m = row["method"]
    if m == "negmerge":
        return negmerge_reference(base, fts)
    if m == "uniform":
        return uniform_reference(base, fts)
    if m == "ties (density 0.2)":
        return ties_reference(base, fts, 0.2)
    if m == "magmax":
        return magmax_reference(base, fts)
    if m.startswith("task arithmetic") and "[" not in m:
        w = [1 if j + 1 == row["model"] else 0 for j in range(result["n"])]
        return task_arithmetic_reference(base, fts, w)
    raise ValueError(f"no NumPy reference for {m!r}")


def reference_check(result: dict, method: str = "negmerge") -> dict:
    """Recompute the row's task vector in NumPy from the files in the work folder and
    compare `base - float32(lambda) * tau` bit for bit with the checkpoint the CLI applied
    at the chosen lambda. `method` is a row label or its prefix ("task arithmetic").
    Returns {"equal": bool, "mismatches": int, "elements": int, "density": float}."""
    work = Path(result["work"])
    row = next(r for r in result["rows"] if r["method"].startswith(method))
    base = load_checkpoint(work / "base.safetensors")
    tau = reference_vector(result, row)
    ref = apply_reference(base, tau, row["lambda"])
    got = load_checkpoint(row["applied"])
    mism, total = 0, 0
    if set(got) != set(ref):
        return {"equal": False, "mismatches": -1, "elements": 0,
                "detail": f"tensor names differ: {sorted(got)} vs {sorted(ref)}"}
    for k in ref:
        a = np.ascontiguousarray(ref[k]).view(np.uint32)
        b = np.ascontiguousarray(got[k])
        if b.dtype != np.float32 or b.shape != a.shape:
            return {"equal": False, "mismatches": -1, "elements": 0,
                    "detail": f"{k}: {b.dtype} {b.shape} vs float32 {a.shape}"}
        mism += int(np.count_nonzero(a != b.view(np.uint32)))
        total += a.size
    return {"equal": mism == 0, "mismatches": mism, "elements": total,
            "density": density_of(tau), "lambda": row["lambda"]}


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=12, help="fine-tuned copies (default 12)")
    ap.add_argument("--forget", type=int, default=3, choices=range(10),
                    help="the digit to forget (default 3)")
    ap.add_argument("--grid-step", type=float, default=0.05)
    ap.add_argument("--grid-max", type=float, default=3.0)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--values", default="f16",
                    help="also merge with `--values V` (e.g. f16) and add lossy rows, "
                         "if the CLI accepts it")
    ap.add_argument("--no-task-arithmetic", action="store_true",
                    help="skip the n single-model task-arithmetic patches")
    ap.add_argument("--check", action="store_true",
                    help="also check the negmerge checkpoint against the NumPy reference")
    a = ap.parse_args(argv)
    try:
        res = run(n=a.n, forget=a.forget, grid_step=a.grid_step, grid_max=a.grid_max,
                  work=a.work, seed=a.seed, values=a.values,
                  task_arithmetic=not a.no_task_arithmetic, verbose=True)
    except (FileNotFoundError, CLIError, ValueError) as e:
        print(f"digits.py: {e}", file=sys.stderr)
        return 1
    print(f"Forgetting digit {a.forget}: MLP 64-{'-'.join(map(str, HIDDEN))}-10, "
          f"n = {a.n} fine-tuned copies, seed {a.seed}, lambda grid 0..{a.grid_max:g} "
          f"step {a.grid_step:g}; lambda = lowest forget acc with retain >= "
          f"{RETAIN_FRACTION:.0%} of base ({RETAIN_FRACTION * res['base_retain']:.3f}).")
    print(f"Test split: {res['test_forget']} images of digit {a.forget}, "
          f"{res['test_retain']} of the other digits. Binary {res['binary']} "
          f"(apply mode: {res['apply_mode']}).")
    print(fmt_table(res["rows"]))
    for note in res["notes"]:
        print(f"note: {note}")
    if a.check:
        for r in res["rows"][1:]:
            try:
                chk = reference_check(res, r["method"])
            except ValueError:
                continue
            print(f"check: {r['method']} at lambda {chk['lambda']} vs NumPy reference: "
                  f"{'bit-identical' if chk['equal'] else 'DIFFERENT'} "
                  f"({chk['mismatches']} of {chk['elements']} elements differ)")
    print(f"total {res['seconds']:.1f} s (training {res['train_seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
