"""Decompression bombs through the real CLI.

A bomb is a small, valid-looking `.negpatch` whose index declares huge all-zero tensors:
every block's mask is the same tiny zstd frame of zero bytes and its values an empty frame,
so the file grows by a few hundred bytes of index per block while the declared elements
grow by a whole block. Written here from formats/negpatch-v1.md, independently of the
Swift writer.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest
import xxhash
import zstandard

from conftest import assert_error, Result


def _part(offset, frame, size):
    return {"offset": offset, "length": len(frame), "size": size, "xxh64": f"{xxhash.xxh64(frame).intdigest():016x}"}


def write_bomb(path, blocks, block_elements, tensors=1):
    """A valid patch of ``tensors`` all-zero F32 tensors of ``blocks * block_elements``
    elements each, stored as sparse blocks with no nonzero element. Returns the declared
    element count."""
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)
    # Streamed in 1 MiB pieces, so that this process stays small: a child's peak resident
    # set, measured below, starts from its parent's at fork.
    size = block_elements // 8
    stream = cctx.compressobj(size=size)
    piece = bytes(min(size, 1 << 20))
    mask = b"".join(stream.compress(piece[:min(len(piece), size - done)]) for done in range(0, size, len(piece)))
    mask += stream.flush()
    empty = cctx.compress(b"")
    body = bytearray(b"NEGPATCH" + (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
    entries, fingerprint = [], []
    elements = blocks * block_elements
    for t in range(tensors):
        block_entries = []
        for _ in range(blocks):
            m = _part(len(body), mask, block_elements // 8)
            body += mask
            v = _part(len(body), empty, 0)
            body += empty
            block_entries.append({"encoding": "sparse", "nonzeros": 0, "mask": m, "values": v})
        name = f"w{t}"
        entries.append({"name": name, "dtype": "F32", "shape": [elements], "elements": elements, "nonzeros": 0,
                        "value_type": "f32", "block_elements": block_elements, "blocks": block_entries})
        fingerprint.append({"name": name, "dtype": "F32", "shape": [elements], "digest": "0" * 16})
    index = {"format": "negpatch", "version": 1,
             "metadata": {"method": "negmerge", "parameters": {}, "n": 2, "inputs": ["a", "b"], "base": "base",
                          "lambda": 1.0, "tool": "bomb", "lossy": False},
             "base_fingerprint": {"algorithm": "xxh64", "tensors": fingerprint},
             "tensors": entries}
    raw = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    offset = len(body)
    body += raw
    body += offset.to_bytes(8, "little") + len(raw).to_bytes(8, "little")
    body += xxhash.xxh64(raw).intdigest().to_bytes(8, "little") + b"NEGPATCH"
    with open(path, "wb") as f:
        f.write(body)
    return elements * tensors


def _peak_mb(binary, args, timeout=120):
    """Runs the CLI and returns (Result, its peak resident set in MB).

    Measured by GNU time, which forks the CLI from its own small process: a child forked
    (or spawned) straight from the test process starts with that process's resident set
    in its peak, which after other tests is hundreds of MB."""
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        report = os.path.join(folder, "peak")
        try:
            p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", report, binary] + [str(a) for a in args],
                               capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"negpatch {' '.join(map(str, args))} did not finish in {timeout} s")
        with open(report) as f:
            peak_kb = int(f.read().strip().splitlines()[-1])
    r = Result([str(a) for a in args], p.returncode, p.stdout.decode("utf-8", "replace"),
               p.stderr.decode("utf-8", "replace"))
    return r, peak_kb / 1024


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    path = str(folder / "bomb.negpatch")
    declared = write_bomb(path, blocks=600, block_elements=1 << 20)
    return path, declared


def _commands(patch, out):
    return {
        "verify": ["verify", patch, "--quiet"],
        "export": ["export", patch, "-o", out, "--quiet"],
        "audit-values": ["audit", patch, "--values"],
        "diff": ["diff", patch, patch, "--quiet"],
        "convert": ["convert", patch, out + ".h5", "--quiet"],
    }


@pytest.mark.parametrize("command", ["verify", "export", "audit-values", "diff", "convert"])
def test_a_small_patch_declaring_huge_tensors_is_refused_before_decoding(cli, bomb, tmp_path, command):
    path, declared = bomb
    size = os.path.getsize(path)
    assert size < 200_000 and declared > 600_000_000
    out = str(tmp_path / "out.safetensors")
    r, peak = _peak_mb(cli.path, _commands(path, out)[command])
    assert_error(r, path, "declares", f"{declared:,}", "--max-elements")
    assert os.listdir(tmp_path) == [], f"left behind: {os.listdir(tmp_path)}"
    assert peak < 100, f"peak resident set {peak:.0f} MB for a refused {size}-byte patch"


def test_max_elements_lets_a_known_large_patch_through(cli, bomb):
    path, declared = bomb
    r = cli.run("verify", path, "--quiet", "--max-elements", declared - 1)
    assert_error(r, path, "declares", f"--max-elements {declared - 1}")
    r = cli.run("verify", path, "--quiet", "--max-elements", declared)
    assert r.returncode == 0 and "intact" in r.stdout, r.describe()
    r = cli.run("verify", path, "--max-elements", 0)
    assert r.returncode == 2 and "--max-elements must be a positive" in r.stderr, r.describe()


def test_verify_with_a_base_bounds_the_patch_by_the_base(cli, bomb, dataset):
    path, declared = bomb
    d = dataset("small")
    r = cli.run("verify", path, "--base", d.base, "--quiet")
    assert_error(r, path, "declares", "floating-point elements of the base", d.base)


def test_a_patch_as_large_as_its_bytes_justify_is_decoded(cli, tmp_path):
    """The default bound (2^28 elements for a small file) passes a patch just inside it."""
    path = str(tmp_path / "inside.negpatch")
    declared = write_bomb(path, blocks=256, block_elements=1 << 20)
    assert declared == 1 << 28
    r = cli.run("verify", path, "--quiet")
    assert r.returncode == 0 and "intact" in r.stdout, r.describe()
    path = str(tmp_path / "outside.negpatch")
    write_bomb(path, blocks=257, block_elements=1 << 20)
    assert_error(cli.run("verify", path, "--quiet"), path, "declares 269,484,032 elements", "268,435,456")


@pytest.mark.parametrize("command", ["verify", "export", "diff"])
def test_a_block_of_2_30_elements_is_refused_before_allocating(cli, tmp_path, command):
    path = str(tmp_path / "block.negpatch")
    write_bomb(path, blocks=1, block_elements=1 << 30)
    out = str(tmp_path / "out.safetensors")
    r, peak = _peak_mb(cli.path, _commands(path, out)[command] + ["--max-elements", 1 << 40])
    if command == "verify":  # verify reports a patch it cannot open as a failed check, on stdout
        assert r.returncode == 1 and "FAILED  file and index" in r.stdout, r.describe()
        assert "'block_elements' must be a positive multiple of 64 up to 2^26" in r.stdout, r.describe()
    else:
        assert_error(r, path, "block_elements", "2^26")
    assert peak < 100, f"peak resident set {peak:.0f} MB: the 2^30-element block was allocated"
    assert sorted(os.listdir(tmp_path)) == ["block.negpatch"]


def test_merge_refuses_a_block_size_over_2_26(cli, dataset, tmp_path):
    d = dataset("small")
    r = cli.run("merge", "--base", d.base, *d.fts, "-o", tmp_path / "p.negpatch", "--block-size", 1 << 27)
    assert r.returncode == 2 and "--block-size must be a positive multiple of 64 up to 2^26" in r.stderr, r.describe()
    cli.ok("merge", "--base", d.base, *d.fts, "-o", tmp_path / "p.negpatch", "--block-size", 1 << 26, "--quiet")
