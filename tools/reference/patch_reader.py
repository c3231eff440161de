"""Independent reader of ``.negpatch`` v1 files, written from formats/negpatch-v1.md.

``read_patch(path)`` performs every check of section 6 (plus a few the layout implies:
unknown keys outside ``metadata``, the tensors' consistency with ``base_fingerprint``,
nonzero sparse values, the ``agreement`` counts' length ``n + 1`` and sum ``elements``)
and returns a ``Patch``: ``metadata``, ``base_fingerprint`` and
``tensors`` (OrderedDict name -> dense float32 array of the tensor's shape), plus
``index`` (the parsed JSON) and ``index_bytes``.  Any violation raises ``PatchError`` (a
``ValueError``) whose message names the file and, where it applies, the tensor and block.

``fingerprint(checkpoint)`` computes the ``base_fingerprint`` a patch for that checkpoint
must carry (XXH64, seed 0, of each tensor's raw bytes, in base order).

HDF5 patches: ``read_patch`` dispatches on the leading bytes; ``read_hdf5_patch`` reads
formats/negpatch-hdf5.md through ``hdf5_reader``.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import xxhash
import zstandard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import checkpoint_files, read_header  # noqa: E402

MAGIC = b"NEGPATCH"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
FOOTER = 32
MAX_INDEX = 1 << 30
MAX_ELEMENTS = (1 << 63) - 1
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
METHODS = ("negmerge", "consensus", "uniform", "task-arithmetic", "ties", "magmax", "dare",
           "dare-ties", "magnitude-prune")
DIRECTIONS = ("subtract", "add")
_HEX16 = re.compile(r"[0-9a-f]{16}\Z")


class PatchError(ValueError):
    """An invalid patch; the message names the file (and tensor/block where it applies)."""


@dataclass
class Patch:
    path: str
    metadata: dict
    base_fingerprint: dict
    tensors: "OrderedDict[str, np.ndarray]"
    index: dict = field(repr=False, default=None)
    index_bytes: bytes = field(repr=False, default=b"")
    entries: list = field(repr=False, default_factory=list)  # raw tensor entries


def xxh64_hex(data) -> str:
    return xxhash.xxh64(data, seed=0).hexdigest()


def _no_dup(pairs):
    d = OrderedDict()
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def _reject_constant(name):
    raise ValueError(f"non-standard JSON number {name}")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def unshuffle(raw: bytes, k: int) -> np.ndarray:
    """Byte-plane shuffled 4k bytes -> k float32 values."""
    return np.frombuffer(raw, dtype=np.uint8).reshape(4, k).T.copy().view("<f4").reshape(k)


VALUE_WIDTH = {"f32": 4, "f16": 2, "bf16": 2, "int8": 1}


def decode_values(raw: bytes, k: int, value_type: str, scale) -> np.ndarray:
    """Stored values of a block -> k float32 values (negpatch-v1.md section 4)."""
    if value_type == "f32":
        return unshuffle(raw, k)
    if value_type in ("f16", "bf16"):
        u16 = np.frombuffer(raw, dtype=np.uint8).reshape(2, k).T.copy().view("<u2").reshape(k)
        if value_type == "f16":
            return u16.view("<f2").astype(np.float32)
        return (u16.astype(np.uint32) << np.uint32(16)).view(np.float32)
    q = np.frombuffer(raw, dtype=np.int8).astype(np.float32)
    return (q * np.float32(scale)).astype(np.float32)


def shuffle(values: np.ndarray) -> bytes:
    v = np.ascontiguousarray(values, dtype="<f4")
    return v.view(np.uint8).reshape(len(v), 4).T.tobytes()


def read_patch(path) -> Patch:
    """Read and fully validate a patch file (format chosen by its leading bytes)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            lead = f.read(8)
    except OSError as e:
        raise PatchError(f"{name}: cannot read: {e}") from None
    if lead == HDF5_MAGIC:
        return read_hdf5_patch(name)
    return read_negpatch(name)


def read_hdf5_patch(path) -> Patch:
    """An HDF5 patch (formats/negpatch-hdf5.md), read by ``hdf5_reader`` (numpy and stock
    h5py), in this module's ``Patch`` shape (``entries`` as a ``.negpatch`` index has them)."""
    import hdf5_reader

    try:
        h = hdf5_reader.read_hdf5(path)
    except hdf5_reader.PatchError as e:
        raise PatchError(str(e)) from None
    return Patch(h.path, h.metadata, h.base_fingerprint, h.tensors, entries=h.entries)


def read_negpatch(path) -> Patch:
    name = os.fspath(path)

    def fail(msg, tensor=None, block=None, part=None):
        where = name
        if tensor is not None:
            where += f": tensor {tensor!r}"
        if block is not None:
            where += f", block {block}"
        if part is not None:
            where += f" ({part})"
        raise PatchError(f"{where}: {msg}")

    try:
        with open(name, "rb") as f:
            buf = f.read()
    except OSError as e:
        fail(f"cannot read: {e}")
    size = len(buf)

    # ---- 1. fixed header, footer, sizes, checksum (in the order of section 2)
    if size < 16 + FOOTER:
        fail(f"file is {size} bytes, shorter than the {16 + FOOTER}-byte minimum")
    if buf[0:8] != MAGIC:
        fail("leading magic is not NEGPATCH")
    version = int.from_bytes(buf[8:12], "little")
    if version != 1:
        fail(f"unsupported version {version}")
    flags = int.from_bytes(buf[12:16], "little")
    if flags != 0:
        fail(f"flags are {flags:#x}, expected 0")
    foot = buf[size - FOOTER:]
    if foot[24:32] != MAGIC:
        fail("trailing magic is not NEGPATCH")
    index_offset = int.from_bytes(foot[0:8], "little")
    index_length = int.from_bytes(foot[8:16], "little")
    index_sum = int.from_bytes(foot[16:24], "little")
    if index_offset < 16:
        fail(f"index_offset {index_offset} < 16")
    if index_offset + index_length + FOOTER != size:
        fail(f"index_offset {index_offset} + index_length {index_length} + 32 != file size "
             f"{size}")
    if index_length > MAX_INDEX:
        fail(f"index_length {index_length} exceeds 1 GiB")
    index_bytes = buf[index_offset:index_offset + index_length]
    got = xxhash.xxh64(index_bytes, seed=0).intdigest()
    if got != index_sum:
        fail(f"index checksum mismatch (footer {index_sum:016x}, computed {got:016x})")

    # ---- 2. the index
    if index_bytes.startswith(b"\xef\xbb\xbf"):
        fail("index starts with a byte-order mark")
    try:
        text = index_bytes.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"index is not valid UTF-8: {e}")
    try:
        index = json.loads(text, object_pairs_hook=_no_dup, parse_constant=_reject_constant)
    except ValueError as e:
        fail(f"index is not valid JSON: {e}")
    if not isinstance(index, dict):
        fail("index is not a JSON object")
    top = {"format", "version", "metadata", "base_fingerprint", "tensors"}
    if set(index) != top:
        fail(f"index keys {sorted(index)} differ from {sorted(top)}")
    if index["format"] != "negpatch":
        fail(f"index format is {index['format']!r}, expected 'negpatch'")
    if not _is_int(index["version"]) or index["version"] != 1:
        fail(f"index version is {index['version']!r}, expected 1")
    metadata = _check_metadata(index["metadata"], fail)
    fp = _check_fingerprint(index["base_fingerprint"], fail)
    tensors = index["tensors"]
    if not isinstance(tensors, list):
        fail("index 'tensors' is not an array")

    fp_by_name = {e["name"]: e for e in fp["tensors"]}
    seen = set()
    plan = []  # (entry, count, blocks [(b, c, m, mask_part|None, values_part)])
    expect = 16  # parts tile 16..index_offset in index order
    tensor_keys = {"name", "dtype", "shape", "elements", "nonzeros", "value_type",
                   "block_elements", "blocks", "agreement"}
    n_models = metadata["n"]
    for ti, e in enumerate(tensors):
        if not isinstance(e, dict):
            fail(f"tensors[{ti}] is not an object")
        tname = e.get("name")
        if not isinstance(tname, str):
            fail(f"tensors[{ti}] has no string name")
        lossy_tensor = e.get("value_type") in ("f16", "bf16", "int8")
        want_keys = tensor_keys | ({"max_abs_error"} if lossy_tensor else set())
        if set(e) != want_keys:
            fail(f"keys {sorted(e)} differ from {sorted(want_keys)}", tname)
        if lossy_tensor and not (_is_num(e["max_abs_error"]) and e["max_abs_error"] >= 0):
            fail(f"max_abs_error {e['max_abs_error']!r} is not a non-negative number", tname)
        if tname in seen:
            fail("duplicate tensor name", tname)
        seen.add(tname)
        if e["dtype"] not in FLOAT_DTYPES:
            fail(f"unknown dtype {e['dtype']!r}", tname)
        shape = e["shape"]
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            fail(f"shape {shape!r} is not a list of non-negative integers", tname)
        count = 1
        for d in shape:
            count *= d
            if count > MAX_ELEMENTS:
                fail(f"shape {shape} overflows", tname)
        if not _is_int(e["elements"]) or e["elements"] != count:
            fail(f"elements {e['elements']!r} != product of shape {shape} ({count})", tname)
        if e["value_type"] not in VALUE_WIDTH:
            fail(f"unknown value_type {e['value_type']!r}", tname)
        be = e["block_elements"]
        if not _is_int(be) or be <= 0 or be % 64 != 0 or be > 1 << 26:
            fail(f"block_elements {be!r} is not a positive multiple of 64 up to 2^26", tname)
        nz = e["nonzeros"]
        if not _is_int(nz) or not 0 <= nz <= count:
            fail(f"nonzeros {nz!r} is not in 0..{count}", tname)
        ag = e["agreement"]
        if (not isinstance(ag, list) or len(ag) != n_models + 1
                or not all(_is_int(x) and x >= 0 for x in ag)):
            fail(f"agreement {ag!r} is not {n_models + 1} non-negative integers", tname)
        if sum(ag) != count:
            fail(f"agreement sums to {sum(ag)}, elements is {count}", tname)
        fpe = fp_by_name.get(tname)
        if fpe is None:
            fail("tensor is not in base_fingerprint", tname)
        if fpe["dtype"] != e["dtype"] or fpe["shape"] != shape:
            fail(f"dtype/shape {e['dtype']}{shape} differ from base_fingerprint "
                 f"{fpe['dtype']}{fpe['shape']}", tname)
        blocks = e["blocks"]
        nblocks = -(-count // be)
        if not isinstance(blocks, list) or len(blocks) != nblocks:
            fail(f"{len(blocks) if isinstance(blocks, list) else blocks!r} blocks, expected "
                 f"{nblocks}", tname)
        total = 0
        bplan = []
        for b, blk in enumerate(blocks):
            c = min(be, count - b * be)
            if not isinstance(blk, dict):
                fail("block entry is not an object", tname, b)
            if blk.get("encoding") not in ("sparse", "dense"):
                fail(f"unknown encoding {blk.get('encoding')!r}", tname, b)
            sparse = blk["encoding"] == "sparse"
            vtype = blk.get("value_type", e["value_type"])
            if vtype not in VALUE_WIDTH or ("value_type" in blk and vtype == e["value_type"]):
                fail(f"block value_type {blk.get('value_type')!r} is unknown or repeats the tensor's",
                     tname, b)
            want = ({"encoding", "nonzeros", "mask", "values"} if sparse
                    else {"encoding", "nonzeros", "values"})
            want |= {"value_type"} if "value_type" in blk else set()
            rice_k = None
            if sparse and "mask_codec" in blk:
                if blk["mask_codec"] != "rice" or not _is_int(blk.get("rice_k")) or not 0 <= blk["rice_k"] <= 30:
                    fail(f"mask_codec {blk.get('mask_codec')!r} / rice_k {blk.get('rice_k')!r} invalid", tname, b)
                rice_k = blk["rice_k"]
                want |= {"mask_codec", "rice_k"}
            want |= {"scale"} if vtype == "int8" else set()
            if vtype == "int8" and not (_is_num(blk.get("scale")) and blk["scale"] >= 0):
                fail(f"int8 block needs a non-negative scale, got {blk.get('scale')!r}", tname, b)
            if set(blk) != want:
                fail(f"block keys {sorted(blk) if isinstance(blk, dict) else blk!r} differ "
                     f"from {sorted(want)}", tname, b)
            m = blk["nonzeros"]
            if not _is_int(m) or not 0 <= m <= c:
                fail(f"nonzeros {m!r} not in 0..{c}", tname, b)
            total += m
            parts = []
            for kind in (("mask", "values") if sparse else ("values",)):
                p = blk[kind]
                pk = {"offset", "length", "size", "xxh64"}
                if not isinstance(p, dict) or set(p) != pk:
                    fail(f"part keys differ from {sorted(pk)}", tname, b, kind)
                if not all(_is_int(p[k]) and 0 <= p[k] < (1 << 64)
                           for k in ("offset", "length", "size")):
                    fail("offset/length/size are not unsigned integers", tname, b, kind)
                if not isinstance(p["xxh64"], str) or not _HEX16.match(p["xxh64"]):
                    fail(f"xxh64 {p['xxh64']!r} is not 16 lowercase hex digits", tname, b,
                         kind)
                need = -(-c // 8) if kind == "mask" else VALUE_WIDTH[vtype] * (m if sparse else c)
                if kind == "mask" and rice_k is not None:
                    need = p["length"]  # a Rice stream is stored as is
                if p["size"] != need:
                    fail(f"size {p['size']} but the block needs {need}", tname, b, kind)
                if p["offset"] != expect:
                    fail(f"part at offset {p['offset']}, expected {expect} (parts must tile "
                         f"16..index_offset in index order)", tname, b, kind)
                if p["offset"] + p["length"] > index_offset:
                    fail(f"part {p['offset']}..{p['offset'] + p['length']} runs past "
                         f"index_offset {index_offset}", tname, b, kind)
                expect = p["offset"] + p["length"]
                parts.append(p)
            bplan.append((b, c, m, parts[0] if sparse else None, parts[-1], vtype, blk.get("scale"), rice_k))
        if total != nz:
            fail(f"block nonzeros sum to {total}, tensor says {nz}", tname)
        plan.append((e, count, bplan))
    if expect != index_offset:
        fail(f"parts end at {expect}, index_offset is {index_offset}")
    floats = [x["name"] for x in fp["tensors"] if x["dtype"] in FLOAT_DTYPES]
    missing = [x for x in floats if x not in seen]
    if missing:
        fail(f"floating-point base tensors without an entry in 'tensors': {missing[:5]}")

    # ---- 3 + 4. parts: checksum before decompressing, then decompress and check
    dctx = zstandard.ZstdDecompressor()
    out = OrderedDict()
    for e, count, bplan in plan:
        tname = e["name"]
        be = e["block_elements"]
        dense = np.zeros(count, dtype=np.float32)
        for b, c, m, mpart, vpart, vtype, scale, rice_k in bplan:
            lo = b * be
            if mpart is not None and rice_k is not None:
                stream = _raw_part(buf, mpart, fail, tname, b, "mask")
                where = rice_positions(stream, rice_k, m, c, lambda msg: fail(msg, tname, b, "mask"))
                vals = decode_values(_part(buf, vpart, dctx, fail, tname, b, "values"), m, vtype, scale)
                if vtype == "f32" and m and (vals == 0).any():
                    fail("a sparse value is zero", tname, b, "values")
                seg = dense[lo:lo + c]
                seg[where] = vals
            elif mpart is not None:
                mask_raw = _part(buf, mpart, dctx, fail, tname, b, "mask")
                bits = np.unpackbits(np.frombuffer(mask_raw, np.uint8), bitorder="little")
                if bits[c:].any():
                    fail("mask padding bits are not zero", tname, b, "mask")
                bits = bits[:c].astype(bool)
                pc = int(bits.sum())
                if pc != m:
                    fail(f"mask popcount {pc} != block nonzeros {m}", tname, b, "mask")
                vals = decode_values(_part(buf, vpart, dctx, fail, tname, b, "values"), m, vtype, scale)
                if vtype == "f32" and m and (vals == 0).any():
                    fail("a sparse value is zero", tname, b, "values")
                seg = dense[lo:lo + c]
                seg[bits] = vals
            else:
                vals = decode_values(_part(buf, vpart, dctx, fail, tname, b, "values"), c, vtype, scale)
                nzc = int(np.count_nonzero(vals))
                if vtype == "f32" and nzc != m:
                    fail(f"{nzc} nonzero values but block nonzeros is {m}", tname, b, "values")
                dense[lo:lo + c] = vals
        out[tname] = dense.reshape(e["shape"])
    return Patch(name, metadata, fp, out, index, index_bytes, tensors)


def _raw_part(buf, p, fail, tname, b, kind) -> bytes:
    """A part's stored bytes after their XXH64 check (Rice masks are not zstd frames)."""
    o, ln = p["offset"], p["length"]
    data = buf[o:o + ln]
    got = xxh64_hex(data)
    if got != p["xxh64"]:
        fail(f"checksum mismatch (index {p['xxh64']}, stored bytes {got})", tname, b, kind)
    return data


def rice_positions(stream: bytes, k: int, m: int, c: int, fail) -> np.ndarray:
    """Decode a Rice-coded mask (negpatch-v1.md section 4): m ascending set-bit offsets in
    a block of c elements; every bit after the last code must be zero padding in the last
    byte."""
    bits = np.unpackbits(np.frombuffer(stream, np.uint8), bitorder="little")
    total = bits.size
    # next_zero[i]: index of the first zero bit at or after i (total when there is none).
    idx = np.where(bits == 0, np.arange(total), total)
    next_zero = np.minimum.accumulate(idx[::-1])[::-1] if total else idx
    weights = 1 << np.arange(k, dtype=np.int64)
    out = np.empty(m, dtype=np.int64)
    pos, position = 0, -1
    for j in range(m):
        if pos >= total:
            fail("Rice mask stream ends early")
        z = int(next_zero[pos])
        if z >= total:
            fail("Rice mask stream ends early")
        q = z - pos
        pos = z + 1
        if pos + k > total:
            fail("Rice mask stream ends early")
        r = int(bits[pos:pos + k] @ weights) if k else 0
        pos += k
        position += 1 + ((q << k) | r)
        if position >= c:
            fail("Rice mask sets a bit past the block")
        out[j] = position
    if (pos + 7) // 8 != len(stream) or bits[pos:].any():
        fail("Rice mask stream has bytes or bits after its last code")
    return out


def _part(buf, p, dctx, fail, tname, b, kind) -> bytes:
    o, ln, sz = p["offset"], p["length"], p["size"]
    data = _raw_part(buf, p, fail, tname, b, kind)
    if data[:4] != ZSTD_MAGIC:
        fail("not a zstd frame", tname, b, kind)
    try:
        fp = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as e:
        fail(f"bad zstd frame header: {e}", tname, b, kind)
    if fp.content_size != sz:
        fail(f"frame content size {fp.content_size} != size {sz} (content size must be "
             f"recorded)", tname, b, kind)
    if not fp.has_checksum:
        fail("frame has no content checksum", tname, b, kind)
    try:
        obj = dctx.decompressobj()
        raw = obj.decompress(data)
    except zstandard.ZstdError as e:
        fail(f"decompression failed: {e}", tname, b, kind)
    if not obj.eof:
        fail("zstd frame is incomplete", tname, b, kind)
    if obj.unused_data:
        fail(f"{len(obj.unused_data)} bytes after the zstd frame", tname, b, kind)
    if len(raw) != sz:
        fail(f"decompressed to {len(raw)} bytes, expected {sz}", tname, b, kind)
    return raw


def _check_metadata(md, fail):
    if not isinstance(md, dict):
        fail("metadata is not an object")
    need = {"method": str, "parameters": dict, "n": int, "inputs": list, "base": str,
            "lambda": float, "tool": str, "lossy": bool}
    for k, t in need.items():
        if k not in md:
            fail(f"metadata has no {k!r}")
        v = md[k]
        ok = (_is_int(v) if t is int else _is_num(v) if t is float
              else isinstance(v, bool) if t is bool else isinstance(v, t))
        if not ok:
            fail(f"metadata {k!r} has the wrong type ({v!r})")
    if md["method"] not in METHODS:
        fail(f"metadata method {md['method']!r} is not one of {METHODS}")
    if not all(isinstance(x, str) for x in md["inputs"]):
        fail("metadata inputs are not strings")
    if md["n"] != len(md["inputs"]):
        fail(f"metadata n = {md['n']} but {len(md['inputs'])} inputs")
    for k, v in md["parameters"].items():
        if not (isinstance(v, str) or _is_num(v) or (isinstance(v, list) and all(_is_num(x) for x in v))):
            fail(f"metadata parameter {k!r} is neither number, string nor array of numbers")
    # section 3.1: absent in patches written before directions existed, which subtract
    md = type(md)(md)  # the index itself keeps what the file says
    if md.setdefault("direction", "subtract") not in DIRECTIONS:
        fail(f"metadata direction {md['direction']!r} is not one of {DIRECTIONS}")
    return md


def _check_fingerprint(fp, fail):
    if not isinstance(fp, dict) or set(fp) != {"algorithm", "tensors"}:
        fail("base_fingerprint must have exactly 'algorithm' and 'tensors'")
    if fp["algorithm"] != "xxh64":
        fail(f"base_fingerprint algorithm {fp['algorithm']!r} is not xxh64")
    if not isinstance(fp["tensors"], list):
        fail("base_fingerprint tensors is not an array")
    names = set()
    for i, e in enumerate(fp["tensors"]):
        if not isinstance(e, dict) or set(e) != {"name", "dtype", "shape", "digest"}:
            fail(f"base_fingerprint tensors[{i}] must have name, dtype, shape, digest")
        if not isinstance(e["name"], str) or e["name"] in names:
            fail(f"base_fingerprint tensors[{i}]: missing or duplicate name {e['name']!r}")
        names.add(e["name"])
        if not isinstance(e["dtype"], str) or not e["dtype"]:
            fail(f"base_fingerprint tensor {e['name']!r}: bad dtype")
        if not isinstance(e["shape"], list) or not all(_is_int(d) and d >= 0
                                                       for d in e["shape"]):
            fail(f"base_fingerprint tensor {e['name']!r}: bad shape {e['shape']!r}")
        if not isinstance(e["digest"], str) or not _HEX16.match(e["digest"]):
            fail(f"base_fingerprint tensor {e['name']!r}: digest is not 16 lowercase hex")
    return fp


# ---------------------------------------------------------------------------- fingerprint


def fingerprint(checkpoint) -> dict:
    """``base_fingerprint`` for a checkpoint (file, folder, sharded folder): one entry per
    tensor in base order with the XXH64 (seed 0) of its raw data bytes."""
    entries = []
    for fpath in checkpoint_files(checkpoint):
        n, _, ents, _, _ = read_header(fpath)
        with open(fpath, "rb") as f:
            for name, dtype, shape, begin, end in ents:
                f.seek(8 + n + begin)
                data = f.read(end - begin)
                entries.append({"name": name, "dtype": dtype, "shape": list(shape),
                                "digest": xxh64_hex(data)})
    return {"algorithm": "xxh64", "tensors": entries}


def fingerprint_matches(patch_fp: dict, checkpoint) -> bool:
    """The spec's rule: same names, dtypes, shapes and digests, in any order."""
    key = lambda e: (e["name"], e["dtype"], tuple(e["shape"]), e["digest"])  # noqa: E731
    return sorted(map(key, patch_fp["tensors"])) == sorted(
        map(key, fingerprint(checkpoint)["tensors"]))


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="validate and summarise a .negpatch file")
    ap.add_argument("patch")
    ap.add_argument("--base", help="check the base fingerprint against this checkpoint")
    a = ap.parse_args(argv)
    p = read_patch(a.patch)
    nz = sum(int(np.count_nonzero(t)) for t in p.tensors.values())
    el = sum(t.size for t in p.tensors.values())
    print(f"{a.patch}: ok, method {p.metadata['method']}, n {p.metadata['n']}, "
          f"{len(p.tensors)} tensors, {nz}/{el} nonzero")
    if a.base:
        print("base fingerprint:", "match" if fingerprint_matches(p.base_fingerprint, a.base)
              else "MISMATCH")


if __name__ == "__main__":
    main()
