#!/usr/bin/env python3
"""In-process patching beside the CLI: `negpatch.Patch.apply_` on tensors already in
memory (a dict of numpy arrays, as a loaded model holds them) against `negpatch apply`
writing the patched checkpoint, on the same base and patch, in one run.

Both include the base-fingerprint check (apply_'s default; the CLI always checks). The
figure is GB/s of model (base bytes / seconds) and the ratio CLI time / in-process time;
the in-process time without the fingerprint check is shown too. Best of 3 each.

    tools/bench/run --python-only [--params 40000000] [--n 10] [--consensus 0.07]

Uses the Python package from python/ and the release C ABI library
(.build/release/libNegPatchABI.so, or $NEGPATCH_LIB).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ.setdefault("NEGPATCH_LIB", os.path.join(ROOT, ".build", "release", "libNegPatchABI.so"))

import bench  # noqa: E402  (its generator, timer and cache folder)


def measure(base, fts, repeat=3):
    import numpy as np

    import negpatch
    from negpatch._safetensors import read_file, shard_files

    out = os.path.join(bench.WORK, "out")
    os.makedirs(out, exist_ok=True)
    patch = os.path.join(out, "python-apply.negpatch")
    bench.Run([bench.BIN, "merge", "--base", base, *fts, "-o", patch, "-q"])
    target = os.path.join(out, "python-apply-out" + ("" if os.path.isdir(base) else ".safetensors"))
    cli, _ = bench.best([bench.BIN, "apply", "--base", base, "--patch", patch, "-o", target, "-q"], repeat=repeat)

    loaded = {}
    for shard in shard_files(base):
        loaded.update({name: raw for name, (dtype, raw) in read_file(shard).items()})
    model_bytes = sum(a.nbytes for a in loaded.values())
    p = negpatch.open(patch)

    def timed(check_base):
        runs = []
        for _ in range(repeat):
            tensors = {k: v.copy() for k, v in loaded.items()}
            start = time.perf_counter()
            p.apply_(tensors, check_base=check_base)
            runs.append(time.perf_counter() - start)
        return min(runs), tensors

    inproc, tensors = timed(True)
    inproc_nocheck, _ = timed(False)
    # The same bytes as the CLI wrote: the comparison is of equal work.
    for shard in shard_files(target):
        for name, (dtype, raw) in read_file(shard).items():
            assert raw.tobytes() == tensors[name].tobytes(), f"in-process result differs on {name}"
    return model_bytes, cli, inproc, inproc_nocheck, p.density


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=int, default=40_000_000)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--consensus", type=float, default=0.07)
    args, _ = ap.parse_known_args()
    key = f"F32-{args.params}-c{args.consensus}-n{args.n}"
    base, fts = bench.generate(key, args.n, args.params, "F32", args.consensus)
    size, cli, inproc, nocheck, density = measure(base, fts)
    gb = size / 1e9
    print("| set | density | CLI apply (writes the checkpoint) | Patch.apply_ in process | ratio | apply_ without fingerprint check |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.params / 1e6:.0f}M float32, n = {args.n} | {density * 100:.1f}% | {cli:.3f} s, {gb / cli:.2f} GB/s "
          f"| {inproc:.3f} s, {gb / inproc:.2f} GB/s | {cli / inproc:.2f}x | {nocheck:.3f} s, {gb / nocheck:.2f} GB/s |")


if __name__ == "__main__":
    main()
