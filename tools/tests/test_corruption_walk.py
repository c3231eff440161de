"""The corruption walk through the CLI: for a small patch of each format, every single-byte
change and every truncation is either detected (exit 1, one `negpatch: error:` line naming
the patch, no output file, no temporary file left) or provably harmless (a byte the
format's specification says readers ignore: listed in HARMLESS, and then the command must
succeed with exactly the output of the intact patch).

`.negpatch` has no harmless bytes (formats/negpatch-v1.md, section 6): every byte is
covered by a check.  A format joins the walk with one entry in PATCH_MAKERS (how to make a
small patch of it from the `.negpatch` one) and, if its specification declares ignored
bytes, one entry in HARMLESS.  Each damaged file goes through `export` (the reader and
every block's decoder); every seventh also through `apply`, which must refuse before
writing anything.
"""

from __future__ import annotations

import os
import subprocess
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import safetensors_np as st

#: format name -> function(cli, workdir, negpatch_path) -> path of a small patch of that
#: format with the same content.
PATCH_MAKERS = {
    "negpatch": lambda cli, folder, patch: patch,
    "hdf5": lambda cli, folder, patch: _convert(cli, patch, os.path.join(folder, "small.h5")),
}

#: format name -> function(data: bytes, offset: int) -> bool, True where the format's
#: specification says a changed byte at ``offset`` is ignored by readers.
HARMLESS: dict = {}

#: format name -> walk every k-th offset only (default 1: every byte). For formats whose
#: smallest file is large (an HDF5 container is ~18 kB), with the full walk done in-process
#: by the format's own Swift tests.
STRIDE: dict = {"hdf5": 11}

# XOR patterns, cycled over the offsets: low bit, high bit, every bit.
PATTERNS = (0x01, 0x80, 0xFF)


def _convert(cli, source, target):
    cli.ok("convert", source, target, "--quiet")
    return target


@pytest.fixture(scope="module")
def walk_set(cli, tmp_path_factory):
    """A base, three fine-tuned models and their NegMerge patch in blocks of 64 elements:
    sparse and dense blocks, a partial block, F32 and BF16; about 1.2 kB."""
    folder = str(tmp_path_factory.mktemp("corruption-walk"))
    rng = np.random.default_rng(7)
    shapes = OrderedDict([("w", ("F32", (8, 16))), ("b", ("BF16", (20,)))])
    base = OrderedDict()
    for name, (dtype, shape) in shapes.items():
        base[name] = (dtype, shape, st.from_f32(dtype, rng.standard_normal(shape).astype(np.float32)))
    paths = [os.path.join(folder, "base.safetensors")]
    st.save_file(paths[0], base)
    for k in range(3):
        ft = OrderedDict()
        for name, (dtype, shape, raw) in base.items():
            x = st.to_f32(dtype, raw)
            # Most elements move up in every model (kept), the rest at random (mostly dropped).
            keep = np.arange(np.prod(shape, dtype=int)).reshape(shape) < 64 if name == "w" else rng.random(shape) < 0.3
            delta = np.where(keep, 0.25, rng.standard_normal(shape))
            ft[name] = (dtype, shape, st.from_f32(dtype, (x + delta).astype(np.float32)))
        paths.append(os.path.join(folder, f"ft_{k + 1}.safetensors"))
        st.save_file(paths[-1], ft)
    patch = os.path.join(folder, "small.negpatch")
    cli.ok("merge", "--base", paths[0], *paths[1:], "-o", patch, "--block-size", "64", "--quiet")
    return folder, paths[0], patch


def _run(binary, args):
    p = subprocess.run([binary] + args, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    return p.returncode, p.stderr.decode("utf-8", "replace")


def _variants(data, stride=1):
    for offset in range(0, len(data), stride):
        damaged = bytearray(data)
        damaged[offset] ^= PATTERNS[offset % len(PATTERNS)]
        yield f"byte {offset} ^ 0x{PATTERNS[offset % len(PATTERNS)]:02x}", offset, bytes(damaged)
    for length in range(0, len(data), stride):
        yield f"truncated to {length} bytes", None, data[:length]


@pytest.mark.parametrize("fmt", sorted(PATCH_MAKERS))
def test_every_flipped_byte_and_truncation_is_caught_by_the_cli(cli, walk_set, fmt):
    folder, base, negpatch = walk_set
    patch = PATCH_MAKERS[fmt](cli, folder, negpatch)
    data = open(patch, "rb").read()
    extension = os.path.splitext(patch)[1]
    intact_tau = os.path.join(folder, f"intact-{fmt}.safetensors")
    cli.ok("export", patch, "-o", intact_tau, "--quiet")
    intact = open(intact_tau, "rb").read()
    harmless = HARMLESS.get(fmt, lambda data, offset: False)

    def check(index_and_variant):
        i, (what, offset, damaged) = index_and_variant
        work = os.path.join(folder, f"w{i % 2}")
        os.makedirs(work, exist_ok=True)
        path = os.path.join(work, f"damaged{extension}")
        with open(path, "wb") as f:
            f.write(damaged)
        out = os.path.join(work, "out.safetensors")
        problems = []
        commands = [["export", path, "-o", out, "--quiet"]]
        if i % 7 == 0:
            commands.append(["apply", "--base", base, "--patch", path, "-o", out, "--quiet"])
        for args in commands:
            status, stderr = _run(cli.path, args)
            produced = os.path.exists(out)
            leftovers = [n for n in os.listdir(work) if n.startswith(".")]
            if offset is not None and harmless(data, offset):
                if status != 0 or (args[0] == "export" and open(out, "rb").read() != intact):
                    problems.append(f"{what}: declared harmless but {args[0]} gave {status}: {stderr.strip()}")
            else:
                lines = stderr.strip().splitlines()
                if status != 1:
                    problems.append(f"{what}: {args[0]} exit {status} (expected 1): {stderr.strip()[:200]}")
                elif len(lines) != 1 or not lines[0].startswith(f"negpatch: error: {path}"):
                    problems.append(f"{what}: {args[0]} error is not one line naming the patch: {stderr.strip()[:200]}")
                if produced:
                    problems.append(f"{what}: {args[0]} wrote {out} despite the damage")
            if leftovers:
                problems.append(f"{what}: {args[0]} left {leftovers}")
            for name in [out] + [os.path.join(work, n) for n in leftovers]:
                if os.path.exists(name):
                    os.remove(name)
        return problems

    # Two workers, one folder each (index parity), so outputs never collide.
    stride = STRIDE.get(fmt, 1)
    variants = list(enumerate(_variants(data, stride)))
    by_worker = [[v for v in variants if v[0] % 2 == w] for w in range(2)]
    with ThreadPoolExecutor(2) as pool:
        results = pool.map(lambda vs: [p for v in vs for p in check(v)], by_worker)
    problems = [p for r in results for p in r]
    assert not problems, f"{len(problems)} of {len(variants)} damaged {fmt} files were not handled:\n" + "\n".join(problems[:30])
    flips = len(range(0, len(data), stride))
    print(f"corruption walk {fmt}: {flips} flips and {flips} truncations of a {len(data)}-byte patch, all detected "
          f"({sum(1 for o in range(0, len(data), stride) if harmless(data, o))} declared harmless)")
