"""HDF5 patches (formats/negpatch-hdf5.md) against stock h5py, the reference reader and the
NumPy reference merge.

Patches are written by the Swift CLI (``merge``, ``convert``); they must open with plain
``h5py.File`` (no hdf5plugin, also in a clean subprocess whose ``HDF5_PLUGIN_PATH`` is an
empty folder), decode with the spec's five lines of numpy and with
``tools/reference/hdf5_reader.py`` to the reference task vector and to ``negpatch export``
bit for bit, convert both ways byte-identically, and bad files must fail with exit status 1
and one error line naming the file and the HDF5 object.

CLI: ``$NEGPATCH_BIN``, else ``.build/release/negpatch``, else ``.build/debug/negpatch`` of
the repository holding this file.  Set size: ``NEGPATCH_HDF5_TEST_PARAMS`` (default 400,000
parameters per checkpoint for the F32 set).
"""

from __future__ import annotations

import json
import contextlib
import os
import struct
import shutil
import subprocess
import sys
import textwrap
from collections import OrderedDict

import h5py
import numpy as np
import pytest
import xxhash

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
_OWN_REFERENCE = os.path.join(REPO, "tools", "reference")
# gen_checkpoints/merge_ref/safetensors_np: this repository's, else the main tree's.
_SHARED_REFERENCE = next(
    (d for d in (_OWN_REFERENCE, "/work/main/tools/reference")
     if os.path.isfile(os.path.join(d, "gen_checkpoints.py"))), _OWN_REFERENCE)
for _d in (_SHARED_REFERENCE, _OWN_REFERENCE):
    if _d not in sys.path:
        sys.path.insert(0, _d)

import gen_checkpoints  # noqa: E402
import hdf5_reader as hr  # noqa: E402
import merge_ref  # noqa: E402
import safetensors_np as st  # noqa: E402

PARAMS = int(os.environ.get("NEGPATCH_HDF5_TEST_PARAMS", "400000"))
TIMEOUT = 300

#: key -> (dtype, n, params, seed, method, consensus)
SETS = {
    "F32": ("F32", 4, PARAMS, 11, "negmerge", 0.3),
    "F32-sparse": ("F32", 5, PARAMS, 17, "negmerge", 0.01),  # ~7% density: Rice-coded masks
    "F16": ("F16", 3, 60_000, 12, "negmerge", 0.3),
    "BF16": ("BF16", 3, 60_000, 13, "negmerge", 0.3),
    "F64": ("F64", 3, 60_000, 14, "negmerge", 0.3),
    "uniform": ("F32", 3, 60_000, 15, "uniform", 0.3),
    "magmax": ("F16", 3, 60_000, 16, "magmax", 0.3),
}


def _binary():
    env = os.environ.get("NEGPATCH_BIN")
    if env:
        return env
    for rel in (".build/release/negpatch", ".build/debug/negpatch"):
        p = os.path.join(REPO, rel)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def run(*args, expect=0):
    binary = _binary()
    if binary is None:
        pytest.fail("no negpatch binary: set NEGPATCH_BIN or build .build/release/negpatch "
                    "or .build/debug/negpatch", pytrace=False)
    p = subprocess.run([binary] + [str(a) for a in args], capture_output=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL)
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    described = f"$ negpatch {' '.join(map(str, args))}\nexit {p.returncode}\nstdout: {out}\nstderr: {err}"
    assert p.returncode >= 0, f"killed by a signal\n{described}"
    if expect is not None:
        assert p.returncode == expect, described
    return p.returncode, out, err


def error_line(err, *mentions):
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("negpatch: error:"), err
    for m in mentions:
        assert m in lines[0], f"error line does not mention {m!r}: {lines[0]}"
    return lines[0]


def data(path):
    with open(path, "rb") as f:
        return f.read()


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def assert_same_tensors(got, exp, what):
    assert list(got) == list(exp), f"{what}: tensor names or order differ"
    for name in exp:
        g, e = np.asarray(got[name]), np.asarray(exp[name])
        assert g.shape == e.shape and g.dtype == e.dtype, f"{what}: {name}: {g.shape} {g.dtype} vs {e.shape} {e.dtype}"
        bad = np.flatnonzero(bits(g).reshape(-1) != bits(e).reshape(-1))
        assert bad.size == 0, (f"{what}: {name}: {bad.size} elements differ bitwise, first at {bad[0]}: "
                               f"{g.reshape(-1)[bad[0]]!r} vs {e.reshape(-1)[bad[0]]!r}")


# ------------------------------------------------------------------------------ fixtures


class Set:
    """A generated checkpoint set merged once into .negpatch, .h5 (gzip) and .h5 (none)."""

    def __init__(self, key, root):
        dtype, n, params, seed, method, consensus = SETS[key]
        self.key, self.method = key, method
        self.dir = os.path.join(root, key)
        info = gen_checkpoints.generate(self.dir, n=n, params=params, dtype=dtype, seed=seed,
                                        consensus=consensus)
        self.base, self.fts = info["base"], info["fts"]
        self.negpatch = os.path.join(self.dir, "p.negpatch")
        self.h5 = os.path.join(self.dir, "p.h5")
        self.h5_none = os.path.join(self.dir, "p-none.h5")
        common = ["merge", "--base", self.base, *self.fts, "--method", method, "--lambda", "0.75", "-q"]
        run(*common, "-o", self.negpatch)
        run(*common, "-o", self.h5)
        run(*common, "-o", self.h5_none, "--compression", "none")
        self._tau = None

    def tau(self):
        if self._tau is None:
            base = st.load_checkpoint(self.base)[0]
            fts = [st.load_checkpoint(p)[0] for p in self.fts]
            self._tau = merge_ref.merge_checkpoints(base, fts, self.method)
        return self._tau


_SETS: dict = {}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hdf5-interop"))


@pytest.fixture(scope="module")
def dataset(root):
    def get(key):
        if key not in _SETS:
            _SETS[key] = Set(key, root)
        return _SETS[key]
    return get


# ------------------------------------------------------------------------------ plain h5py

# Runs in a clean interpreter: stock h5py only, no plugin path, decoding with the spec's
# own recipe (formats/negpatch-hdf5.md, section 8).
_PLAIN_H5PY = textwrap.dedent("""
    import json, sys
    import h5py, numpy as np
    assert "hdf5plugin" not in sys.modules
    path, out = sys.argv[1], sys.argv[2]
    filters = set()
    with h5py.File(path) as f:
        assert f.attrs["format"] == "negpatch-hdf5" and f.attrs["version"] == 1
        fingerprint = json.loads(f.attrs["base_fingerprint"])
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                filters.update(obj._filters)
                obj[...]  # every dataset reads without a plugin
        f.visititems(visit)
        tensors = {}
        for g in f["tensors"].values():
            E = int(g.attrs["elements"])
            bits = np.unpackbits(g["mask"][:], count=E, bitorder="little").astype(bool)
            tau = np.zeros(E, np.float32)
            tau[bits] = g["values"][:]
            tensors[g.attrs["name"]] = tau.reshape(tuple(g.attrs["shape"]))
        order = [f["tensors"][f"{i:06d}"].attrs["name"] for i in range(int(f["tensors"].attrs["count"]))]
    np.savez(out, **{f"t{i}": tensors[name] for i, name in enumerate(order)})
    print(json.dumps({"order": order, "filters": sorted(filters), "fingerprint_entries": len(fingerprint["tensors"])}))
""")


@pytest.mark.parametrize("key", list(SETS))
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_plain_h5py_in_a_clean_process_decodes_the_reference(dataset, tmp_path, key, compression):
    s = dataset(key)
    path = s.h5 if compression == "gzip" else s.h5_none
    empty = tmp_path / "no-plugins"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDF5")}
    env["HDF5_PLUGIN_PATH"] = str(empty)
    out = tmp_path / "plain.npz"
    p = subprocess.run([sys.executable, "-c", _PLAIN_H5PY, path, str(out)], capture_output=True,
                       env=env, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr.decode()
    info = json.loads(p.stdout)
    # Built into every HDF5: deflate and shuffle (gzip only), and the Fletcher-32 checksums.
    allowed = ({"gzip", "shuffle"} if compression == "gzip" else set()) | {"fletcher32"}
    assert set(info["filters"]) <= allowed, f"filters beyond {allowed}: {info['filters']}"
    if compression == "gzip" and key == "F32":
        assert set(info["filters"]) == {"gzip", "shuffle", "fletcher32"}
    with np.load(out) as z:
        plain = OrderedDict((name, z[f"t{i}"]) for i, name in enumerate(info["order"]))
    assert_same_tensors(plain, s.tau(), f"plain h5py decode of {key}")


def test_h5py_in_this_process_has_no_plugin_loaded(dataset):
    s = dataset("F32")
    with h5py.File(s.h5) as f:
        assert f.attrs["format"] == "negpatch-hdf5"
        assert "hdf5plugin" not in sys.modules


# ------------------------------------------------------------------------------ reference reader


@pytest.mark.parametrize("key", list(SETS))
def test_reference_reader_matches_reference_merge_and_export(dataset, tmp_path, key):
    s = dataset(key)
    ref = s.tau()
    for path in (s.h5, s.h5_none, s.negpatch):
        p = hr.read_patch(path)
        assert_same_tensors(p.tensors, ref, f"reference reader on {os.path.basename(path)}")
    # negpatch export of the HDF5 patch: the same tensors and the same bytes as the .negpatch's.
    run("export", s.h5, "-o", tmp_path / "h5.safetensors", "-q")
    run("export", s.negpatch, "-o", tmp_path / "np.safetensors", "-q")
    assert data(tmp_path / "h5.safetensors") == data(tmp_path / "np.safetensors")
    exported = st.load_checkpoint(str(tmp_path / "h5.safetensors"))[0]
    assert_same_tensors(OrderedDict((k, a) for k, (_, _, a) in exported.items()), ref, "export")


@pytest.mark.parametrize("key", list(SETS))
def test_both_formats_carry_the_same_metadata_blocks_and_fingerprint(dataset, key):
    s = dataset(key)
    a, b, c = hr.read_patch(s.h5), hr.read_patch(s.negpatch), hr.read_patch(s.h5_none)
    assert (a.format, b.format) == ("hdf5", "negpatch")
    for x in (a, c):
        assert x.metadata == b.metadata
        assert x.base_fingerprint == b.base_fingerprint
        assert x.blocks == b.blocks
        assert x.agreement == b.agreement
    assert a.metadata["method"] == s.method and a.metadata["lambda"] == 0.75
    assert a.metadata["inputs"] == [os.path.basename(p) for p in s.fts]
    base = st.load_checkpoint(s.base)[0]
    assert [e["name"] for e in a.base_fingerprint["tensors"]] == list(base)
    for e in a.base_fingerprint["tensors"]:
        assert e["digest"] == xxhash.xxh64_hexdigest(st.raw_bytes(base[e["name"]][2])), e["name"]
    if s.method in ("uniform", "magmax"):
        assert any(enc == "dense" for t in a.blocks.values() for enc, _ in t["blocks"])


@pytest.mark.parametrize("key", ["F32", "F32-sparse"])
def test_gzip_is_smaller_than_no_compression(dataset, key):
    s = dataset(key)
    sizes = {p: os.path.getsize(p) for p in (s.negpatch, s.h5, s.h5_none)}
    dense = sum(t.size * 4 for t in s.tau().values())
    print("\nsizes:", {os.path.basename(k): v for k, v in sizes.items()}, "dense f32:", dense)
    assert sizes[s.h5] < sizes[s.h5_none] < dense


# ------------------------------------------------------------------------------ conversion


@pytest.mark.parametrize("key", list(SETS))
def test_conversion_round_trips_are_byte_identical(dataset, tmp_path, key):
    s = dataset(key)
    t = tmp_path
    run("convert", s.negpatch, t / "a.h5", "-q")
    assert data(t / "a.h5") == data(s.h5), "converting the .negpatch gives the file merge wrote as .h5"
    run("convert", t / "a.h5", t / "b.negpatch", "-q")
    assert data(t / "b.negpatch") == data(s.negpatch)
    run("convert", s.h5_none, t / "c.negpatch", "-q")
    assert data(t / "c.negpatch") == data(s.negpatch)
    run("convert", s.negpatch, t / "d.h5", "--compression", "none", "-q")
    assert data(t / "d.h5") == data(s.h5_none)
    run("convert", s.h5, t / "e.hdf5", "--compression", "none", "-q")
    run("convert", t / "e.hdf5", t / "f.h5", "-q")
    assert data(t / "f.h5") == data(s.h5)
    run("convert", s.h5, t / "g.bin", "--format", "negpatch", "--level", "3", "-q")
    assert data(t / "g.bin") == data(s.negpatch)
    for p in ("a.h5", "d.h5", "e.hdf5"):
        run("export", t / p, "-o", t / f"{p}.safetensors", "-q")
    run("export", s.negpatch, "-o", t / "ref.safetensors", "-q")
    for p in ("a.h5", "d.h5", "e.hdf5"):
        assert data(t / f"{p}.safetensors") == data(t / "ref.safetensors"), p


def test_convert_prints_both_sizes_and_refuses_its_input(dataset, tmp_path):
    s = dataset("F32")
    _, out, _ = run("convert", s.negpatch, tmp_path / "x.h5")
    assert "negpatch" in out and "hdf5, gzip" in out and str(tmp_path / "x.h5") in out
    code, _, err = run("convert", s.h5, s.h5, expect=1)
    error_line(err, s.h5)
    _, _, err = run("convert", s.h5, tmp_path / "y.h5", "--compression", "zstd", expect=2)
    assert "--compression" in err
    assert not os.path.exists(tmp_path / "y.h5")


@pytest.mark.parametrize("values", ["f16", "bf16", "int8"])
def test_lossy_negpatch_converts_to_the_task_vector_it_decodes_to(dataset, tmp_path, values):
    s = dataset("F16")
    lossy = tmp_path / f"{values}.negpatch"
    run("merge", "--base", s.base, *s.fts, "--values", values, "-o", lossy, "-q")
    run("convert", lossy, tmp_path / "l.h5", "-q")
    expected, got = hr.read_patch(lossy), hr.read_patch(tmp_path / "l.h5")
    assert got.metadata["lossy"] is True and expected.metadata["lossy"] is True
    assert_same_tensors(got.tensors, expected.tensors, f"{values} patch converted to HDF5")
    run("export", lossy, "-o", tmp_path / "a.safetensors", "-q")
    run("export", tmp_path / "l.h5", "-o", tmp_path / "b.safetensors", "-q")
    assert data(tmp_path / "a.safetensors") == data(tmp_path / "b.safetensors")
    _, _, err = run("merge", "--base", s.base, *s.fts, "--values", values, "-o", tmp_path / "x.h5", expect=2)
    assert "HDF5" in err and not os.path.exists(tmp_path / "x.h5")


@pytest.mark.parametrize("key", ["F32", "BF16"])
def test_apply_takes_an_hdf5_patch_like_a_negpatch(dataset, tmp_path, key):
    s = dataset(key)
    run("apply", "--base", s.base, "--patch", s.h5, "-o", tmp_path / "h5.safetensors", "-q")
    run("apply", "--base", s.base, "--patch", s.negpatch, "-o", tmp_path / "np.safetensors", "-q")
    assert data(tmp_path / "h5.safetensors") == data(tmp_path / "np.safetensors")
    run("apply", "--base", s.base, "--patch", s.h5_none, "--lambda", "0.5,1", "-o", tmp_path / "sweep", "-q")
    run("apply", "--base", s.base, "--patch", s.negpatch, "--lambda", "1", "-o", tmp_path / "one.safetensors", "-q")
    assert data(tmp_path / "sweep" / "lambda-1.safetensors") == data(tmp_path / "one.safetensors")


# ------------------------------------------------------------------------------ tensor names


def test_names_with_slashes_and_dots_survive(tmp_path):
    names = ["a/b.c", "/", ".", "..", "x//y/", "layers.0.mlp/ü ñ", "tensors", "000000"]
    rng = np.random.default_rng(5)
    base = OrderedDict((n, rng.standard_normal((3, 70)).astype(np.float32)) for n in names)
    fts = []
    for k in range(3):
        ft = OrderedDict((n, (a + np.float32(0.01) * (1 + k)).astype(np.float32)) for n, a in base.items())
        fts.append(ft)
    paths = [str(tmp_path / "base.safetensors")] + [str(tmp_path / f"ft{k}.safetensors") for k in range(3)]
    for p, t in zip(paths, [base] + fts):
        st.save_file(p, t)
    run("merge", "--base", paths[0], *paths[1:], "-o", tmp_path / "p.h5", "-q")
    with h5py.File(tmp_path / "p.h5") as f:
        stored = [f["tensors"][f"{i:06d}"].attrs["name"] for i in range(len(names))]
    assert stored == names
    ref = merge_ref.merge_checkpoints(st.load_checkpoint(paths[0])[0], [st.load_checkpoint(p)[0] for p in paths[1:]])
    assert_same_tensors(hr.read_patch(tmp_path / "p.h5").tensors, ref, "names")


# ------------------------------------------------------------------------------ bad input


def _copy(src, dst):
    shutil.copyfile(src, dst)
    return str(dst)


@contextlib.contextmanager
def _edit(path):
    """Opens a patch for editing with h5py, then seals the edit with a fresh integrity
    block, as a hostile writer would, so the structural checks must catch it."""
    with h5py.File(path, "r+") as f:
        yield f
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    digest = xxhash.xxh64(bytes(data[512:]), seed=0).intdigest()
    data[8:32] = struct.pack("<IIQQ", 1, 0, len(data), digest)
    with open(path, "wb") as fh:
        fh.write(data)


def _bad_cases(s, tmp):
    """name -> (path, strings the error must mention)."""
    with h5py.File(s.h5) as f:
        name2 = f["tensors/000002"].attrs["name"]
        name0 = f["tensors/000001"].attrs["name"]
    cases = {}

    p = str(tmp / "plain.h5")
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(3)
    cases["not_a_patch"] = (p, ["HDF5 file is not a NegPatch patch"])

    p = _copy(s.h5, tmp / "missing.h5")
    with _edit(p) as f:
        del f["tensors/000002/values"]
    cases["missing_dataset"] = (p, ["/tensors/000002", "'values'", "missing", name2])

    p = _copy(s.h5, tmp / "masksize.h5")
    with _edit(p) as f:
        m = f["tensors/000002/mask"][...]
        del f["tensors/000002/mask"]
        f["tensors/000002/mask"] = m[:-1]
    cases["mask_size"] = (p, ["/tensors/000002/mask", "shape", name2])

    p = _copy(s.h5, tmp / "valuescount.h5")
    with _edit(p) as f:
        v = f["tensors/000002/values"][...]
        del f["tensors/000002/values"]
        f["tensors/000002/values"] = np.concatenate([v, np.ones(1, np.float32)])
    cases["values_count"] = (p, ["/tensors/000002/values", name2])

    p = _copy(s.h5, tmp / "popcount.h5")
    with _edit(p) as f:
        m = f["tensors/000001/mask"][...]
        m[0] ^= 1
        f["tensors/000001/mask"][...] = m
    cases["mask_popcount"] = (p, ["/tensors/000001", "block 0", "set bits", name0])

    p = _copy(s.h5, tmp / "version.h5")
    with _edit(p) as f:
        f.attrs["version"] = np.int64(2)
    cases["version"] = (p, ["version 2"])

    p = str(tmp / "truncated.h5")
    with open(p, "wb") as f:
        f.write(data(s.h5)[:4096])
    cases["truncated"] = (p, ["integrity block"])
    return cases


def test_bad_hdf5_patches_fail_with_one_line_naming_file_and_object(dataset, tmp_path):
    s = dataset("F32")
    for case, (path, mentions) in _bad_cases(s, tmp_path).items():
        out = tmp_path / f"{case}.safetensors"
        code, _, err = run("export", path, "-o", out, expect=None)
        assert code == 1, f"{case}: exit {code}\n{err}"
        error_line(err, path, *mentions)
        assert not os.path.exists(out), f"{case}: export left output behind"
        code, _, err = run("apply", "--base", s.base, "--patch", path, "-o", tmp_path / "applied.safetensors",
                           expect=None)
        assert code == 1, f"{case}: apply exit {code}\n{err}"
        assert not os.path.exists(tmp_path / "applied.safetensors")
        code, _, err = run("convert", path, tmp_path / f"{case}.negpatch", expect=None)
        assert code == 1 and not os.path.exists(tmp_path / f"{case}.negpatch"), f"{case}: convert\n{err}"
        # The reference reader agrees that the file is bad, and says where.
        with pytest.raises(hr.PatchError) as info:
            hr.read_patch(path)
        assert path in str(info.value), case
    leftovers = [n for n in os.listdir(tmp_path) if ".tmp-" in n]
    assert not leftovers, f"temporary files left: {leftovers}"
