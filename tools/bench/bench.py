#!/usr/bin/env python3
"""NegPatch benchmark: merge near the I/O floor, apply near a plain copy, patches near entropy.

Generates checkpoint sets (cached in tools/bench/work/), then measures in one run, side by
side on the same machine and data, with the page cache warm:
  - the I/O floor: `cat` of every input to /dev/null;
  - `negpatch merge` (negmerge, ties) and the NumPy reference merge (tools/reference);
  - `negpatch apply` against a plain `cp` of the base;
  - patch sizes against `zstd -19` of the dense float32 task vector and the entropy floor
    of the mask, and the time of `zstd -3` on the dense vector;
  - lossy value sizes (f16, bf16, int8);
  - peak anonymous memory (RssAnon polled from /proc: mapped input files are page cache,
    not the process's own memory) for n = 3, 10 and 30;
  - the bitmask decoder micro-benchmark.
Prints a Markdown report and, with --write, stores it in BENCHMARKS.md.

    tools/bench/run [--params 40000000] [--n 10] [--consensus 0.07] [--large] [--write]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
WORK = os.path.join(ROOT, "tools", "bench", "work")
BIN = os.path.join(ROOT, ".build", "release", "negpatch")
DECODER = os.path.join(ROOT, ".build", "release", "negpatch-bench-decoder")


def generate(key, n, params, dtype, consensus, sharded=0):
    import gen_checkpoints
    folder = os.path.join(WORK, key)
    done = os.path.join(folder, ".done")
    if not os.path.exists(done):
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {key} ...", file=sys.stderr, flush=True)
        gen_checkpoints.generate(folder, n=n, params=params, dtype=dtype, sharded=sharded,
                                 consensus=consensus, seed=0)
        open(done, "w").close()
    base = os.path.join(folder, "base" if sharded else "base.safetensors")
    fts = [os.path.join(folder, f"ft_{k}" if sharded else f"ft_{k}.safetensors") for k in range(1, n + 1)]
    return base, fts


def generate_streaming(key, n, params, consensus, seed=0):
    """A BF16 set too large to build in memory: each file is written tensor by tensor, in
    chunks, from generators seeded by (seed, tensor, chunk[, model]), so the base and the
    fine-tuned copies agree without holding any model in memory."""
    import numpy as np
    import gen_checkpoints
    from safetensors_np import encode_header, f32_to_bf16
    folder = os.path.join(WORK, key)
    done = os.path.join(folder, ".done")
    base = os.path.join(folder, "base.safetensors")
    fts = [os.path.join(folder, f"ft_{k}.safetensors") for k in range(1, n + 1)]
    if os.path.exists(done):
        return base, fts
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    tensors = [(name, shape) for name, kind, shape in gen_checkpoints.layout(params) if kind == "float"]
    entries = [(name, "BF16", shape, 2 * math.prod(shape)) for name, shape in tensors]
    header = encode_header(entries, {"format": "pt"})
    chunk = 1 << 23
    for k, path in enumerate([base] + fts):
        print(f"generating {key}: {os.path.basename(path)}", file=sys.stderr, flush=True)
        with open(path, "wb") as f:
            f.write(len(header).to_bytes(8, "little"))
            f.write(header)
            for t, (name, shape) in enumerate(tensors):
                count = math.prod(shape)
                for c, lo in enumerate(range(0, count, chunk)):
                    size = min(chunk, count - lo)
                    values = np.random.default_rng([seed, t, c]).standard_normal(size, dtype=np.float32) * np.float32(0.02)
                    if k:
                        shared = np.random.default_rng([seed, t, c, 1_000_000])
                        agree = shared.random(size, dtype=np.float32) < consensus
                        sign = np.where(shared.random(size, dtype=np.float32) < 0.5, -1, 1).astype(np.float32)
                        noise = np.random.default_rng([seed, t, c, k]).standard_normal(size, dtype=np.float32)
                        delta = np.where(agree, sign * np.abs(noise), noise) * np.float32(0.002)
                        values = values + delta
                    f.write(f32_to_bf16(values).tobytes())
    open(done, "w").close()
    return base, fts


def files_of(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".safetensors"))
        else:
            out.append(p)
    return out


class Run:
    """A command timed by wall clock, its peak RssAnon sampled every 2 ms."""

    def __init__(self, args, stdout=subprocess.DEVNULL):
        self.peak_anon_kb = 0
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=stdout, stderr=subprocess.PIPE)
        status = f"/proc/{proc.pid}/status"

        def poll():
            while proc.poll() is None:
                try:
                    with open(status) as f:
                        for line in f:
                            if line.startswith("RssAnon:"):
                                self.peak_anon_kb = max(self.peak_anon_kb, int(line.split()[1]))
                except OSError:
                    return
                time.sleep(0.002)

        watcher = threading.Thread(target=poll)
        watcher.start()
        _, err = proc.communicate()
        watcher.join()
        self.seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"failed: {' '.join(args)}\n{err.decode()}")


def best(args, repeat=3, stdout=subprocess.DEVNULL, before=None):
    runs = []
    for _ in range(repeat):
        if before:
            before()
        runs.append(Run(args, stdout=stdout))
    return min(r.seconds for r in runs), max(r.peak_anon_kb for r in runs)


def floor_seconds(paths, repeat=3):
    files = files_of(paths)
    times = []
    for _ in range(repeat + 1):  # the first run warms the cache
        start = time.perf_counter()
        for f in files:
            with open(f, "rb") as src:
                while src.readinto(BUF):
                    pass
        times.append(time.perf_counter() - start)
    cat = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(["cat"] + files, stdout=subprocess.DEVNULL, check=True)
        cat.append(time.perf_counter() - start)
    return min(cat)


BUF = bytearray(1 << 24)


def patch_index(path):
    with open(path, "rb") as f:
        data = f.read()
    offset, length = struct.unpack("<QQ", data[-32:-16])
    return json.loads(data[offset:offset + length]), len(data)


def entropy_bits(p):
    return 0.0 if p <= 0 or p >= 1 else -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def sizes(patch):
    index, total = patch_index(patch)
    mask = values = 0
    floor_tensor = 0.0
    elements = nonzeros = 0
    for t in index["tensors"]:
        elements += t["elements"]
        nonzeros += t["nonzeros"]
        if t["elements"]:
            floor_tensor += entropy_bits(t["nonzeros"] / t["elements"]) * t["elements"] / 8
        for b in t["blocks"]:
            mask += b.get("mask", {}).get("length", 0)
            values += b["values"]["length"]
    floor_global = entropy_bits(nonzeros / elements) * elements / 8 if elements else 0
    return dict(total=total, mask=mask, values=values, floor_tensor=floor_tensor,
                floor_global=floor_global, elements=elements, nonzeros=nonzeros)


def numpy_merge_seconds(base, fts):
    code = ("import sys,time; sys.path.insert(0, %r)\n"
            "import merge_ref, safetensors_np as st\n"
            "t=time.perf_counter(); b=st.load_checkpoint(%r)[0]; f=[st.load_checkpoint(p)[0] for p in %r]\n"
            "merge_ref.merge_checkpoints(b, f); print(time.perf_counter()-t)\n") % (
        os.path.join(ROOT, "tools", "reference"), base, fts)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def machine():
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB, Linux {platform.release()}"


def mb(x):
    return f"{x / 1e6:.2f} MB"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=int, default=40_000_000)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--consensus", type=float, default=0.07)
    ap.add_argument("--memory-n", default="3,10,30", help="model counts for the memory row")
    ap.add_argument("--large", action="store_true", help="also a BF16 set of 1B parameters and n = 8 (18 GB of files)")
    ap.add_argument("--write", action="store_true", help="store the report in BENCHMARKS.md")
    args = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    out = os.path.join(WORK, "out")
    os.makedirs(out, exist_ok=True)
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {machine()}; page cache warm; times are the best of 3.", ""]

    memory_ns = [int(x) for x in args.memory_n.split(",")]
    nmax = max([args.n] + memory_ns)
    key = f"F32-{args.params}-c{args.consensus}-n{nmax}"
    base, all_fts = generate(key, nmax, args.params, "F32", args.consensus)
    sets = [(f"{args.params / 1e6:.0f}M float32, n = {args.n}", base, all_fts[:args.n], args.params * 4)]
    if args.large:
        lbase, lfts = generate_streaming("BF16-1B-n8", 8, 1_000_000_000, args.consensus)
        sets.append(("1B bfloat16, n = 8", lbase, lfts, 2_000_000_000))

    lines += ["| set | I/O floor (cat) | negmerge | ratio | ties | ratio | NumPy negmerge | apply | cp | ratio | cp + sync | ratio | peak anon (negmerge) | one model |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    size_rows = []
    for label, b, fts, model_bytes in sets:
        floor = floor_seconds([b] + fts)
        patch = os.path.join(out, "negmerge.negpatch")
        merge = [BIN, "merge", "--base", b, *fts, "-q"]
        neg, neg_anon = best(merge + ["-o", patch])
        ties, _ = best(merge + ["--method", "ties", "-o", os.path.join(out, "ties.negpatch")], repeat=1 if args.large else 3)
        numpy_s = numpy_merge_seconds(b, fts) if model_bytes < 1e9 else float("nan")
        target = os.path.join(out, "applied" if os.path.isdir(b) else "applied.safetensors")
        def clean():
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
        cp, _ = best(["cp", "-r", b, target], before=clean)
        # apply flushes its output before renaming it into place; cp does not.
        cp_sync, _ = best(["sh", "-c", 'cp -r "$0" "$1" && sync "$1"', b, target], before=clean)
        apply, _ = best([BIN, "apply", "--base", b, "--patch", patch, "-o", target, "-q"], before=clean)
        clean()
        lines.append(f"| {label} | {floor:.2f} s | {neg:.2f} s | {neg / floor:.2f}x | {ties:.2f} s | {ties / floor:.2f}x | "
                     f"{numpy_s:.2f} s | {apply:.2f} s | {cp:.2f} s | {apply / cp:.2f}x | {cp_sync:.2f} s | {apply / cp_sync:.2f}x | {neg_anon / 1024:.0f} MiB | "
                     f"{model_bytes / 2**20:.0f} MiB |")
        # Sizes against zstd of the dense task vector.
        dense = os.path.join(out, "tau.safetensors")
        subprocess.run([BIN, "export", patch, "-o", dense, "-q"], check=True, stdout=subprocess.DEVNULL)
        z19 = os.path.join(out, "tau.zst")
        heavy = model_bytes >= 1e9
        # zstd -19 runs at a few MB/s: on the large set the comparison uses zstd -19 of the
        # first 256 MB of the dense vector, scaled to its size.
        if heavy:
            with open(dense, "rb") as src, open(z19 + ".part", "wb") as dst:
                dst.write(src.read(256 << 20))
            subprocess.run(["zstd", "-19", "-T1", "-q", "-f", z19 + ".part", "-o", z19], check=True)
            os.remove(z19 + ".part")
        else:
            subprocess.run(["zstd", "-19", "-T1", "-q", "-f", dense, "-o", z19], check=True)
        z3_time, _ = best(["zstd", "-3", "-T1", "-q", "-f", dense, "-o", os.path.join(out, "tau3.zst")])
        s = sizes(patch)
        # Encoding alone: convert decodes every block and encodes it again.
        encode, _ = best([BIN, "convert", patch, os.path.join(out, "reencoded.negpatch")])
        zstd19 = os.path.getsize(z19) * (os.path.getsize(dense) / (256 << 20) if heavy else 1)
        row = dict(label=label, dense=os.path.getsize(dense), zstd19=zstd19, zstd3_time=z3_time,
                   merge_time=neg, encode_time=encode, **s)
        for vt in ("f16", "bf16", "int8"):
            lossy = os.path.join(out, f"negmerge-{vt}.negpatch")
            subprocess.run(merge + ["--values", vt, "-o", lossy], check=True, stdout=subprocess.DEVNULL)
            row[vt] = os.path.getsize(lossy)
        size_rows.append(row)
        for f in (dense, z19):
            os.remove(f)

    lines += ["", "| set | density | patch | / zstd -19 of dense tau | mask / entropy floor (per tensor) | values | f16 | bf16 | int8 | decode + encode (convert) vs zstd -3 of dense tau |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in size_rows:
        lines.append(f"| {r['label']} | {100 * r['nonzeros'] / r['elements']:.2f}% | {mb(r['total'])} | "
                     f"{r['total'] / r['zstd19']:.2f}x ({mb(r['zstd19'])}) | {r['mask'] / r['floor_tensor']:.3f}x "
                     f"({mb(r['mask'])} vs {mb(r['floor_tensor'])}) | {mb(r['values'])} | {mb(r['f16'])} | {mb(r['bf16'])} | "
                     f"{mb(r['int8'])} | {r['encode_time']:.2f} s vs {r['zstd3_time']:.2f} s |")

    lines += ["", "| n | peak anonymous memory, negmerge | peak anonymous memory, ties | merge time |", "| --- | --- | --- | --- |"]
    for n in memory_ns:
        fts = all_fts[:n]
        t, anon = best([BIN, "merge", "--base", base, *fts, "-o", os.path.join(out, "m.negpatch"), "-q"], repeat=1)
        _, anon_ties = best([BIN, "merge", "--base", base, *fts, "--method", "ties", "-o", os.path.join(out, "t.negpatch"), "-q"], repeat=1)
        lines.append(f"| {n} | {anon / 1024:.0f} MiB | {anon_ties / 1024:.0f} MiB | {t:.2f} s |")

    decoder = subprocess.run([DECODER], capture_output=True, text=True, check=True).stdout.strip()
    lines += ["", "Bitmask decoder, 2^24 elements in blocks of 2^20, mask and values to dense float32:", "", decoder]
    report = "\n".join(lines)
    print(report)
    if args.write:
        with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
            f.write("# Benchmarks\n\nProduced by `tools/bench/run --write` (see `tools/bench/bench.py` for what each "
                    "column measures). Goals are in issue terms: merge at most 1.5x the I/O floor (ties 3x), apply "
                    "at most 1.3x `cp`, peak anonymous memory flat in n and at most 1.5x one model, patch at most "
                    "0.8x `zstd -19` of the dense task vector, mask at most 1.05x its entropy floor.\n\n")
            f.write(report + "\n")


if __name__ == "__main__":
    main()
