#!/usr/bin/env python3
"""Reference reader of NegPatch patches in both formats, independent of NegPatch's code.

    python tools/reference/hdf5_reader.py PATCH [--npz OUT.npz]

``read_patch(path)`` recognises the format by its first bytes and returns a ``Patch``:
``format`` (``hdf5`` or ``negpatch``), ``metadata`` (dict as in the ``.negpatch`` index),
``base_fingerprint`` (dict ``{"algorithm", "tensors"}``), ``tensors`` (OrderedDict name ->
dense float32 array of the tensor's shape, patch order) and ``blocks`` (OrderedDict name ->
``block_elements`` and the list of ``(encoding, nonzeros)`` per block).  Any violation of the
format raises ``PatchError`` (a ``ValueError``) naming the file and the object.

* HDF5 (``formats/negpatch-hdf5.md``): numpy and h5py only; every check of section 6.
  Stock h5py, no ``hdf5plugin``: the format only uses deflate and shuffle.
* ``.negpatch`` (``formats/negpatch-v1.md``): delegated to ``patch_reader`` (numpy,
  zstandard and xxhash), which makes every check of that format.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NEGPATCH_MAGIC = b"NEGPATCH"
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
FORMAT_TAG = "negpatch-hdf5"


class PatchError(ValueError):
    """An invalid patch; the message names the file and the object (and tensor)."""


@dataclass
class Patch:
    path: str
    format: str
    metadata: dict
    base_fingerprint: dict
    tensors: "OrderedDict[str, np.ndarray]"
    blocks: "OrderedDict[str, dict]" = field(default_factory=OrderedDict, repr=False)
    agreement: "OrderedDict[str, list]" = field(default_factory=OrderedDict, repr=False)
    #: per tensor, its entry as a ``.negpatch`` index writes it (name, dtype, shape, elements,
    #: nonzeros, value_type, block_elements, blocks [{encoding, nonzeros}], agreement)
    entries: list = field(default_factory=list, repr=False)


INTEGRITY_MAGIC = b"NPATCHH5"
USER_BLOCK = 512


def check_integrity(path, fail):
    """The 512-byte integrity block (negpatch-hdf5.md): magic, version 1, reserved 0, the
    file's size, the XXH64 of every byte after the block, zeros; checked before h5py reads
    anything."""
    import struct
    import xxhash
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] == HDF5_SIGNATURE:
        fail("HDF5 file is not a NegPatch patch (no integrity block before the HDF5 data)")
    if len(data) <= USER_BLOCK or data[:8] != INTEGRITY_MAGIC:
        fail("missing or truncated integrity block")
    version, reserved, size, digest = struct.unpack("<IIQQ", data[8:32])
    if version != 1 or reserved != 0 or size != len(data) or any(data[32:USER_BLOCK]):
        fail("integrity block does not describe this file (damaged or truncated)")
    if xxhash.xxh64(data[USER_BLOCK:], seed=0).intdigest() != digest:
        fail("integrity block checksum mismatch (damaged file)")


def read_patch(path) -> Patch:
    with open(path, "rb") as f:
        head = f.read(8)
    if head in (HDF5_SIGNATURE, INTEGRITY_MAGIC):
        return read_hdf5(path)
    if head == NEGPATCH_MAGIC:
        return read_negpatch(path)
    raise PatchError(f"{path}: not a NegPatch patch (unrecognised signature)")


# ------------------------------------------------------------------------------ shared


def _check_tensor_header(fail, name, dtype, shape, elements, nonzeros, block_elements,
                         value_type, agreement, n):
    if dtype not in FLOAT_DTYPES:
        fail(f"dtype {dtype!r} is not floating")
    if any(int(d) < 0 for d in shape):
        fail(f"negative shape {shape}")
    prod = math.prod(int(d) for d in shape)
    if prod >= 1 << 60:
        fail(f"shape {shape} overflows")
    if elements != prod:
        fail(f"elements {elements} != prod(shape {shape}) = {prod}")
    if not 0 <= nonzeros <= elements:
        fail(f"nonzeros {nonzeros} outside 0..{elements}")
    if value_type != "f32":
        fail(f"value_type {value_type!r} != 'f32'")
    if not (0 < block_elements <= 1 << 26 and block_elements % 64 == 0):
        fail(f"block_elements {block_elements} is not a positive multiple of 64 up to 2^26")
    if agreement is not None:
        if len(agreement) != n + 1 or any(a < 0 for a in agreement) or sum(agreement) != elements:
            fail(f"agreement {list(agreement)[:8]}... must be n + 1 = {n + 1} counts summing "
                 f"to {elements}")


def _check_metadata(fail, md):
    for key, kind in (("method", str), ("parameters", dict), ("n", int), ("inputs", list),
                      ("base", str), ("lambda", float), ("tool", str), ("lossy", bool)):
        if not isinstance(md.get(key), kind) or (kind is int and isinstance(md[key], bool)):
            fail(f"metadata {key!r} missing or not {kind.__name__}")
    if md["n"] < 1:
        fail("metadata 'n' < 1")
    if not math.isfinite(md["lambda"]):
        fail("metadata 'lambda' is not finite")
    if not all(isinstance(i, str) for i in md["inputs"]):
        fail("metadata 'inputs' holds a non-string")
    if md["direction"] not in ("subtract", "add"):
        fail(f"metadata 'direction' is {md['direction']!r}, not 'subtract' or 'add'")


def _check_fingerprint(fail, fp):
    if not isinstance(fp, dict) or fp.get("algorithm") != "xxh64" \
            or not isinstance(fp.get("tensors"), list):
        fail("base_fingerprint is not {'algorithm': 'xxh64', 'tensors': [...]}")
    seen = set()
    for e in fp["tensors"]:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            fail("base_fingerprint entry without a name")
        if e["name"] in seen:
            fail(f"base_fingerprint lists {e['name']!r} twice")
        seen.add(e["name"])
        d = e.get("digest")
        if not (isinstance(d, str) and len(d) == 16 and all(c in "0123456789abcdef" for c in d)):
            fail(f"base_fingerprint digest of {e['name']!r} is not 16 hex digits")
        if not isinstance(e.get("shape"), list) or not isinstance(e.get("dtype"), str):
            fail(f"base_fingerprint entry {e['name']!r} lacks shape or dtype")


# ------------------------------------------------------------------------------ HDF5


def read_hdf5(path) -> Patch:
    import h5py  # stock h5py; the format needs no plugin

    def fail(msg, obj="/", tensor=None):
        where = f"{obj}" + (f" (tensor {tensor!r})" if tensor is not None else "")
        raise PatchError(f"{path}: {where}: {msg}")

    check_integrity(path, fail)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise PatchError(f"{path}: not a readable HDF5 file: {e}") from None
    with f:
        attrs = f.attrs

        def attr(obj, holder, key, kind, tensor=None):
            if key not in holder.attrs:
                fail(f"attribute {key!r} is missing", obj, tensor)
            v = holder.attrs[key]
            if kind == "str":
                if isinstance(v, bytes):
                    v = v.decode("utf-8")
                if not isinstance(v, str):
                    fail(f"attribute {key!r} is not a string", obj, tensor)
                return v
            if kind == "strs":
                a = np.asarray(v)
                if a.ndim != 1:
                    fail(f"attribute {key!r} is not a 1-D string array", obj, tensor)
                out = [x.decode("utf-8") if isinstance(x, bytes) else x for x in a.tolist()]
                if not all(isinstance(x, str) for x in out):
                    fail(f"attribute {key!r} is not a 1-D string array", obj, tensor)
                return out
            a = np.asarray(v)
            if kind == "int":
                if a.ndim != 0 or a.dtype.kind not in "iu":
                    fail(f"attribute {key!r} is not a scalar integer", obj, tensor)
                return int(a)
            if kind == "ints":
                if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
                    fail(f"attribute {key!r} is not a 1-D integer array", obj, tensor)
                return [int(x) for x in a]
            if kind == "float":
                if a.ndim != 0 or a.dtype.kind != "f":
                    fail(f"attribute {key!r} is not a scalar float", obj, tensor)
                return float(a)
            raise AssertionError(kind)

        if "format" not in attrs:
            raise PatchError(f"{path}: HDF5 file is not a NegPatch patch (no root attribute 'format')")
        fmt = attr("/", f, "format", "str")
        if fmt != FORMAT_TAG:
            raise PatchError(f"{path}: HDF5 file is not a NegPatch patch (format {fmt!r})")
        if attr("/", f, "version", "int") != 1:
            fail("unsupported version")
        try:
            params = json.loads(attr("/", f, "parameters", "str"))
            fp = json.loads(attr("/", f, "base_fingerprint", "str"))
        except json.JSONDecodeError as e:
            fail(f"invalid JSON attribute: {e}")
        lossy = attr("/", f, "lossy", "int")
        if lossy not in (0, 1):
            fail("attribute 'lossy' is not 0 or 1")
        md = {"method": attr("/", f, "method", "str"), "parameters": params,
              "n": attr("/", f, "n", "int"), "inputs": attr("/", f, "inputs", "strs"),
              "base": attr("/", f, "base", "str"), "lambda": attr("/", f, "lambda", "float"),
              "tool": attr("/", f, "tool", "str"), "lossy": bool(lossy),
              # section 2: written only for adding patches; absent means subtract
              "direction": attr("/", f, "direction", "str") if "direction" in f.attrs
              else "subtract"}
        _check_metadata(fail, md)
        _check_fingerprint(fail, fp)

        if "tensors" not in f or not isinstance(f["tensors"], h5py.Group):
            fail("group 'tensors' is missing")
        tg = f["tensors"]
        count = attr("/tensors", tg, "count", "int")
        if count < 0 or len(tg) != count:
            fail(f"attribute 'count' is {count} but the group holds {len(tg)} members", "/tensors")
        tensors, blocks, agreements, entries = OrderedDict(), OrderedDict(), OrderedDict(), []
        for i in range(count):
            gname = f"{i:06d}"
            obj = f"/tensors/{gname}"
            if gname not in tg or not isinstance(tg[gname], h5py.Group):
                fail("group is missing", obj)
            g = tg[gname]
            name = attr(obj, g, "name", "str")
            if name in tensors:
                fail("a second tensor with this name", obj, name)
            dtype = attr(obj, g, "dtype", "str", name)
            shape = attr(obj, g, "shape", "ints", name)
            E = attr(obj, g, "elements", "int", name)
            nz = attr(obj, g, "nonzeros", "int", name)
            be = attr(obj, g, "block_elements", "int", name)
            vt = attr(obj, g, "value_type", "str", name)
            agreement = attr(obj, g, "agreement", "ints", name) if "agreement" in g.attrs else None
            _check_tensor_header(lambda m: fail(m, obj, name), name, dtype, shape, E, nz, be, vt,
                                 agreement, md["n"])
            B = 0 if E == 0 else (E - 1) // be + 1

            def ds(key, kinds, itemsize, length):
                o = f"{obj}/{key}"
                if key not in g or not isinstance(g[key], h5py.Dataset):
                    fail("dataset is missing", o, name)
                d = g[key]
                if d.ndim != 1:
                    fail("dataset is not one-dimensional", o, name)
                if d.dtype.kind not in kinds or (itemsize and d.dtype.itemsize != itemsize):
                    fail(f"dataset has dtype {d.dtype}", o, name)
                if length is not None and d.shape[0] != length:
                    fail(f"holds {d.shape[0]} elements, expected {length}", o, name)
                return d[...]

            mask = ds("mask", "u", 1, (E + 7) // 8)
            enc = ds("block_encoding", "iu", 0, B).astype(np.int64)
            mb = ds("block_nonzeros", "iu", 0, B).astype(np.int64)
            values = ds("values", "f", 4, None).astype("<f4")
            starts = np.arange(B, dtype=np.int64) * be
            counts = np.minimum(be, E - starts)
            if np.any((enc != 0) & (enc != 1)):
                fail("an encoding is not 0 or 1", f"{obj}/block_encoding", name)
            if np.any(mb < 0) or np.any(mb > counts):
                fail("a block's nonzeros lie outside 0..c_b", f"{obj}/block_nonzeros", name)
            if int(mb.sum()) != nz:
                fail(f"blocks hold {int(mb.sum())} nonzeros, attribute says {nz}",
                     f"{obj}/block_nonzeros", name)
            stored = np.where(enc == 1, counts, mb)
            S = int(stored.sum())
            if values.shape[0] != S:
                fail(f"holds {values.shape[0]} values, the blocks store {S} (popcount of mask)",
                     f"{obj}/values", name)
            bits = np.unpackbits(mask, bitorder="little")
            if np.any(bits[E:]):
                fail("mask padding bits are set", f"{obj}/mask", name)
            bits = bits[:E].astype(bool)
            cb = np.concatenate([[0], np.cumsum(bits, dtype=np.int64)])
            per_block = cb[np.minimum(starts + be, E)] - cb[starts] if B else np.zeros(0, np.int64)
            bad = np.flatnonzero(per_block != stored)
            if bad.size:
                b = int(bad[0])
                fail(f"block {b}: mask has {int(per_block[b])} set bits, the block stores "
                     f"{int(stored[b])} values", f"{obj}/mask", name)
            vstart = np.concatenate([[0], np.cumsum(stored)])
            cnz = np.concatenate([[0], np.cumsum(values != 0, dtype=np.int64)])
            nz_block = cnz[vstart[1:]] - cnz[vstart[:-1]]
            bad = np.flatnonzero(nz_block != mb)
            if bad.size:
                b = int(bad[0])
                fail(f"block {b}: values hold {int(nz_block[b])} nonzeros, block_nonzeros says "
                     f"{int(mb[b])}", f"{obj}/values", name)
            tau = np.zeros(E, dtype=np.float32)
            tau[bits] = values
            tensors[name] = tau.reshape(tuple(shape))
            blocks[name] = {"block_elements": be,
                            "blocks": [("dense" if e else "sparse", int(m)) for e, m in zip(enc, mb)]}
            agreements[name] = agreement
            entry = {"name": name, "dtype": dtype, "shape": shape, "elements": E, "nonzeros": nz,
                     "value_type": vt, "block_elements": be,
                     "blocks": [{"encoding": enc_, "nonzeros": m_} for enc_, m_ in blocks[name]["blocks"]]}
            if agreement is not None:
                entry["agreement"] = agreement
            entries.append(entry)
        return Patch(str(path), "hdf5", md, fp, tensors, blocks, agreements, entries)


# ------------------------------------------------------------------------------ .negpatch


def read_negpatch(path) -> Patch:
    """A ``.negpatch`` through ``patch_reader`` (the format's own reference reader, which
    needs zstandard and xxhash), in this module's ``Patch`` shape."""
    import patch_reader

    try:
        p = patch_reader.read_negpatch(path)
    except patch_reader.PatchError as e:
        raise PatchError(str(e)) from None
    blocks, agreements = OrderedDict(), OrderedDict()
    for e in p.entries:
        blocks[e["name"]] = {"block_elements": e["block_elements"],
                             "blocks": [(b["encoding"], b["nonzeros"]) for b in e["blocks"]]}
        agreements[e["name"]] = e.get("agreement")
    return Patch(str(path), "negpatch", p.metadata, p.base_fingerprint, p.tensors, blocks,
                 agreements, p.entries)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("patch")
    ap.add_argument("--npz", help="write the dense task vectors to this .npz file")
    args = ap.parse_args(argv)
    try:
        p = read_patch(args.patch)
    except PatchError as e:
        print(f"hdf5_reader: error: {e}", file=sys.stderr)
        return 1
    nz = sum(int(np.count_nonzero(t)) for t in p.tensors.values())
    el = sum(t.size for t in p.tensors.values())
    print(f"{p.format} patch, method {p.metadata['method']}, n {p.metadata['n']}, "
          f"{len(p.tensors)} tensors, {el} elements, {nz} nonzero")
    if args.npz:
        np.savez(args.npz, **p.tensors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
