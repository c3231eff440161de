"""The C ABI (Sources/CNegPatchABI/include/negpatch.h) through a C program
(Tests/CABI/negpatch_abi_test.c) compiled here against libNegPatchABI.so: it lists, decodes
and patches every tensor, and its output must equal `negpatch export` and `negpatch apply`
bit for bit, for every dtype, sharded bases, lossy values and HDF5 patches; error paths
return the documented codes naming file and tensor.

Library: ``$NEGPATCH_LIB``, else .build/release/libNegPatchABI.so, else .build/debug/
(tests fail, never skip, when none exists)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import REPO, describe_mismatch, st

SOURCE = os.path.join(REPO, "Tests", "CABI", "negpatch_abi_test.c")
HEADER_DIR = os.path.join(REPO, "Sources", "CNegPatchABI", "include")


def find_library():
    env = os.environ.get("NEGPATCH_LIB")
    if env:
        return env if os.path.isfile(env) else None
    for rel in (".build/release/libNegPatchABI.so", ".build/debug/libNegPatchABI.so"):
        p = os.path.join(REPO, rel)
        if os.path.isfile(p):
            return p
    return None


@pytest.fixture(scope="session")
def abi_test(workdir):
    lib = find_library()
    if lib is None:
        pytest.fail("no libNegPatchABI.so: set NEGPATCH_LIB or run swift build --product NegPatchABI", pytrace=False)
    exe = os.path.join(str(workdir), "negpatch_abi_test")
    libdir = os.path.dirname(os.path.abspath(lib))
    # The program links the library by its file name; -Werror keeps the header warning-free.
    cmd = ["cc", "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-I", HEADER_DIR, SOURCE, "-o", exe,
           os.path.abspath(lib), f"-Wl,-rpath,{libdir}", "-lm"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"compiling the C test failed:\n$ {' '.join(cmd)}\n{p.stderr}"

    def run(*args, expect=0):
        r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=300)
        assert r.returncode >= 0, f"killed by signal {-r.returncode}: {args}\n{r.stdout}\n{r.stderr}"
        if expect is not None:
            assert r.returncode == expect, f"negpatch_abi_test {' '.join(map(str, args))}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r
    return run


def listing(abi_test, patch):
    lines = abi_test("list", patch).stdout.splitlines()
    metadata = json.loads(lines[0])
    tensors = []
    for line in lines[2:]:
        i, name, dtype, shape, elements, nonzeros = line.split("\t")
        tensors.append((int(i), name, dtype, tuple(int(d) for d in shape.split(",")) if shape else (), int(elements), int(nonzeros)))
    return metadata, lines[1], tensors


def check_decode_and_apply(abi_test, cli, tmp, base, patch, lam):
    metadata, info, tensors = listing(abi_test, patch)
    # export: the dense float32 tau of every patched tensor
    exported = os.path.join(tmp, "tau.safetensors")
    cli.ok("export", patch, "-o", exported)
    tau, _ = st.load_checkpoint(exported)
    assert [t[1] for t in tensors] == [name for name in tau], "the ABI lists other tensors than export writes"
    decoded = os.path.join(tmp, "decoded")
    os.makedirs(decoded)
    abi_test("decode", patch, decoded)
    for i, name, dtype, shape, elements, nonzeros in tensors:
        got = np.fromfile(os.path.join(decoded, f"{i}.f32"), dtype="<f4").reshape(shape)
        expected = tau[name][2].reshape(shape)
        problem = describe_mismatch(f"decode {name}", got, expected)
        assert not problem, problem
        # Stored elements: lossy values may round to zero and still be stored.
        stored_zeros_allowed = metadata.get("lossy", False)
        count = int(np.count_nonzero(expected))
        assert nonzeros == count or (stored_zeros_allowed and nonzeros > count), f"{name}: nonzeros {nonzeros}, tau has {count}"
        assert elements == expected.size
    # apply: the base bytes of every patched tensor, patched through the ABI, against the CLI
    applied = os.path.join(tmp, "applied" + ("" if os.path.isdir(base) else ".safetensors"))
    cli.ok("apply", "--base", base, "--patch", patch, "--lambda", lam, "-o", applied, "-q")
    base_tensors, _ = st.load_checkpoint(base)
    cli_tensors, _ = st.load_checkpoint(applied)
    raw_in, raw_out = os.path.join(tmp, "in"), os.path.join(tmp, "out")
    os.makedirs(raw_in)
    os.makedirs(raw_out)
    for i, name, dtype, *_ in tensors:
        assert base_tensors[name][0] == dtype
        base_tensors[name][2].tofile(os.path.join(raw_in, f"{i}.raw"))
    abi_test("apply", patch, lam, raw_in, raw_out)
    for i, name, dtype, shape, *_ in tensors:
        raw = cli_tensors[name][2]
        got = np.fromfile(os.path.join(raw_out, f"{i}.raw"), dtype=raw.dtype).reshape(raw.shape)
        problem = describe_mismatch(f"apply {name} ({dtype})", got, raw)
        assert not problem, problem
    return metadata, info


@pytest.mark.parametrize("key", ["F32", "F16", "BF16", "F64", "BF16-sharded"])
def test_abi_decodes_and_patches_like_export_and_apply(abi_test, cli, merged, workdir, key):
    m = merged(key)
    tmp = os.path.join(str(workdir), "c-abi", key)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    metadata, info = check_decode_and_apply(abi_test, cli, tmp, m.data.base, m.patch, "0.6")
    assert metadata["method"] == "negmerge" and metadata["n"] == m.data.n
    assert float(metadata["lambda"]) == float(m.lam)
    assert info == f"format negpatch lambda {float(m.lam):.17g}"


@pytest.mark.parametrize("name,options,lossy", [
    ("p.h5", ["--method", "ties"], False),
    ("f16.negpatch", ["--method", "uniform", "--values", "f16"], True),
    ("int8.negpatch", ["--values", "int8"], True),
])
def test_abi_reads_hdf5_and_lossy_patches(abi_test, cli, dataset, workdir, name, options, lossy):
    d = dataset("small")
    tmp = os.path.join(str(workdir), "c-abi", name)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "check"))
    patch = os.path.join(tmp, name)
    cli.ok("merge", "--base", d.base, *d.fts, "-o", patch, "-q", *options)
    metadata, info = check_decode_and_apply(abi_test, cli, os.path.join(tmp, "check"), d.base, patch, "1.25")
    assert metadata["lossy"] is lossy
    assert info.startswith("format hdf5 " if name.endswith(".h5") else "format negpatch ")


def test_abi_errors_name_file_and_tensor(abi_test, merged):
    m = merged("F32")
    r = abi_test("errors", m.patch)
    assert "0 failures" in r.stdout, r.stdout


def test_abi_checks_base_and_signatures(abi_test, cli, dataset, workdir):
    d = dataset("small")
    tmp = os.path.join(str(workdir), "c-abi", "trust")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    patch = os.path.join(tmp, "p.negpatch")
    cli.ok("merge", "--base", d.base, *d.fts, "-o", patch, "-q")
    assert abi_test("check-base", patch, d.base).stdout.strip() == "check-base: status 0"
    wrong = abi_test("check-base", patch, d.fts[0]).stdout
    assert wrong.startswith("check-base: status 3 code mismatch") and "fingerprint differs" in wrong, wrong

    key, other = os.path.join(tmp, "team.key"), os.path.join(tmp, "other.key")
    cli.ok("keygen", "-o", key)
    cli.ok("keygen", "-o", other)
    unsigned = abi_test("open", patch, key + ".pub").stdout
    assert unsigned.startswith("open: status 7 code untrusted") and "not signed" in unsigned, unsigned
    cli.ok("sign", patch, "--key", key)
    assert abi_test("open", patch, key + ".pub").stdout.strip() == "open: status 0"
    assert abi_test("open", patch, other + ".pub", key + ".pub").stdout.strip() == "open: status 0"
    foreign = abi_test("open", patch, other + ".pub").stdout
    assert foreign.startswith("open: status 7 code untrusted") and "not a trusted key" in foreign, foreign
    # A changed byte, even one no reader would look at: refused before parsing.
    with open(patch, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0x40]))
    tampered = abi_test("open", patch, key + ".pub").stdout
    assert tampered.startswith("open: status 7 code untrusted") and "changed after signing" in tampered, tampered
    # Without trusted keys the reader sees the damage itself (the footer no longer checks).
    damaged = abi_test("open", patch).stdout
    assert damaged.startswith("open: status 1") or damaged.startswith("open: status 2"), damaged
