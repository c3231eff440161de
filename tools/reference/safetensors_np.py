"""safetensors read/write with plain NumPy (no torch), written from shared/REFERENCE.md s.4.

Arrays are kept in their raw dtype: BF16 (which NumPy lacks) is a ``uint16`` array of the
raw bit patterns; ``bf16_to_f32`` and ``f32_to_bf16`` convert exactly / with
round-to-nearest-even.

Public API
----------
``read_file(path) -> (OrderedDict[name, (dtype, shape, array)], metadata)``
    strict reader: rejects everything REFERENCE.md s.4 lists (raises ``SafetensorsError``,
    a ``ValueError`` naming the file).
``load_checkpoint(path) -> (OrderedDict, metadata)``
    a ``.safetensors`` file, a folder with ``model.safetensors``, or a folder with
    ``model.safetensors.index.json`` (sharded).  Tensors come in *base order*: data order in
    each file (ascending ``data_offsets``), and for shards the shard files in the order of
    their first appearance in the name-sorted ``weight_map`` (formats/negpatch-v1.md s.3.2).
``checkpoint_files(path) -> list[path]``: the safetensors files of a checkpoint, in that order.
``read_header(path)``: the raw header bytes and parsed entries, for byte-level tests.
``save_file(path, tensors, metadata=None)`` and ``save_sharded(folder, tensors, n_shards)``.

``tensors`` passed to the writers is a mapping name -> ``(dtype, array)`` or
``(dtype, shape, array)`` or a bare NumPy array (dtype inferred; uint16 is *not* taken as
BF16 unless the dtype is given).  Order of the mapping = data order = header order.
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict

import numpy as np

__all__ = [
    "DTYPES", "FLOAT_DTYPES", "SafetensorsError", "bf16_to_f32", "f32_to_bf16",
    "to_f32", "from_f32", "read_file", "read_header", "load_checkpoint",
    "checkpoint_files", "save_file", "save_sharded", "encode_header", "raw_bytes",
]

#: safetensors dtype string -> NumPy storage dtype (little-endian).  BF16 is stored raw.
DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "C64": np.dtype("<c8"),
    # FP8 variants are stored raw, one byte each.
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
    "F8_E8M0": np.dtype("u1"),
    "F8_E4M3FNUZ": np.dtype("u1"),
    "F8_E5M2FNUZ": np.dtype("u1"),
    # Sub-byte dtypes are stored raw: arrays of their bytes (see SUB_BYTE_BITS).
    "F6_E2M3": np.dtype("u1"),
    "F6_E3M2": np.dtype("u1"),
    "F4": np.dtype("u1"),
}
#: bits per element of the dtypes narrower than a byte; a tensor of them must end on a
#: byte boundary (the safetensors reference implementation refuses others).
SUB_BYTE_BITS = {"F6_E2M3": 6, "F6_E3M2": 6, "F4": 4}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
MAX_HEADER = 100_000_000
_U64_MAX = (1 << 64) - 1

_NUMPY_TO_ST = {
    np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16",
    np.dtype("<i8"): "I64", np.dtype("<i4"): "I32", np.dtype("<i2"): "I16",
    np.dtype("i1"): "I8", np.dtype("u1"): "U8", np.dtype("?"): "BOOL",
}


class SafetensorsError(ValueError):
    """A malformed safetensors file; the message names the file."""


# ---------------------------------------------------------------------------- bf16 / f16


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """Exact BF16 -> float32: the 16 bits become the high half of the float32."""
    raw = np.asarray(raw, dtype=np.uint16)
    return (raw.astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> BF16 bits, round-to-nearest-even; overflow goes to +-inf; NaN stays NaN
    (sign and top payload bits kept, quiet bit set so the payload cannot truncate to inf)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    lsb = (bits >> np.uint32(16)) & np.uint32(1)
    rounded = ((bits + np.uint32(0x7FFF) + lsb) >> np.uint32(16)).astype(np.uint16)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    if nan.any():
        qnan = ((bits >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
        rounded = np.where(nan, qnan, rounded)
    return rounded


def to_f32(dtype: str, raw: np.ndarray) -> np.ndarray:
    """Raw storage array -> float32 as methods.md defines t_k (F16/BF16 exact, F64 rounded)."""
    if dtype == "BF16":
        return bf16_to_f32(raw)
    if dtype in ("F32", "F16", "F64"):
        return np.asarray(raw).astype(np.float32)
    raise TypeError(f"to_f32: {dtype} is not a floating dtype")


def from_f32(dtype: str, x: np.ndarray) -> np.ndarray:
    """float32 -> raw storage of ``dtype`` with round-to-nearest-even."""
    x = np.asarray(x, dtype=np.float32)
    if dtype == "BF16":
        return f32_to_bf16(x)
    if dtype == "F16":
        return x.astype(np.float16)  # NumPy's float->half is RNE (overflow -> inf)
    if dtype == "F32":
        return x.copy()
    if dtype == "F64":
        return x.astype(np.float64)
    raise TypeError(f"from_f32: {dtype} is not a floating dtype")


# ---------------------------------------------------------------------------- reading


def _no_dup_pairs(pairs):
    d = OrderedDict()
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_header(path):
    """Parse and validate the header of ``path`` without reading the data.

    Returns ``(header_len, header_bytes, entries, metadata, file_size)`` where ``entries`` is
    a list of ``(name, dtype, shape, begin, end)`` in data order (ascending offsets; equal
    offsets, i.e. empty tensors, keep header order).  Offsets are relative to the data start
    ``8 + header_len``.
    """
    name = os.fspath(path)

    def fail(msg):
        raise SafetensorsError(f"{name}: {msg}")

    try:
        size = os.path.getsize(name)
        with open(name, "rb") as f:
            head8 = f.read(8)
            if size < 8 or len(head8) < 8:
                fail(f"file is {size} bytes, shorter than the 8-byte header length")
            n = int.from_bytes(head8, "little")
            if n > MAX_HEADER:
                fail(f"header length {n} exceeds {MAX_HEADER}")
            if 8 + n > size:
                fail(f"header length {n} runs past the end of the file ({size} bytes)")
            hbytes = f.read(n)
    except OSError as e:
        fail(f"cannot read: {e}")
    try:
        text = hbytes.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"header is not valid UTF-8: {e}")
    try:
        obj = json.loads(text, object_pairs_hook=_no_dup_pairs)
    except ValueError as e:  # includes duplicate keys
        fail(f"header is not valid JSON: {e}")
    if not isinstance(obj, dict):
        fail("header is not a JSON object")
    metadata = None
    entries = []
    for key, val in obj.items():
        if key == "__metadata__":
            if val is None:  # the reference implementation reads null as no metadata
                continue
            if not isinstance(val, dict) or not all(isinstance(v, str) for v in val.values()):
                fail("__metadata__ is not a map of strings to strings")
            metadata = dict(val)
            continue
        if not isinstance(val, dict) or set(val) != {"dtype", "shape", "data_offsets"}:
            fail(f"tensor {key!r}: entry must have exactly dtype, shape, data_offsets")
        dtype, shape, offs = val["dtype"], val["shape"], val["data_offsets"]
        if dtype not in DTYPES:
            fail(f"tensor {key!r}: unknown or unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            fail(f"tensor {key!r}: shape {shape!r} is not a list of non-negative integers")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(_is_int(o) and 0 <= o <= _U64_MAX for o in offs)):
            fail(f"tensor {key!r}: data_offsets {offs!r} is not two unsigned integers")
        count = math.prod(shape)
        if dtype in SUB_BYTE_BITS:
            if count * SUB_BYTE_BITS[dtype] % 8:
                fail(f"tensor {key!r}: {dtype}{shape} does not end on a byte boundary")
            nbytes = count * SUB_BYTE_BITS[dtype] // 8
        else:
            nbytes = count * DTYPES[dtype].itemsize
        if nbytes > _U64_MAX:
            fail(f"tensor {key!r}: shape {shape} overflows")
        begin, end = offs
        if end < begin:
            fail(f"tensor {key!r}: data_offsets [{begin}, {end}] run backwards")
        if end - begin != nbytes:
            fail(f"tensor {key!r}: data_offsets span {end - begin} bytes but {dtype}{shape} "
                 f"needs {nbytes}")
        entries.append((key, dtype, tuple(shape), begin, end))
    entries.sort(key=lambda e: (e[3], e[4]))  # stable: empty tensors keep header order
    data_len = size - 8 - n
    pos = 0
    for key, dtype, shape, begin, end in entries:
        if begin < pos:
            fail(f"tensor {key!r}: data_offsets [{begin}, {end}] overlap the previous tensor")
        if begin > pos:
            fail(f"tensor {key!r}: gap of {begin - pos} bytes before data_offsets "
                 f"[{begin}, {end}]")
        if end > data_len:
            fail(f"tensor {key!r}: data_offsets [{begin}, {end}] run past the end of the "
                 f"data ({data_len} bytes)")
        pos = end
    if pos != data_len:
        fail(f"{data_len - pos} bytes after the last tensor are not covered by any tensor")
    return n, hbytes, entries, metadata, size


def read_file(path):
    """Read one safetensors file: ``(OrderedDict name -> (dtype, shape, array), metadata)``.

    Arrays are read-only views of one buffer, in the raw dtype (BF16 as uint16), in data
    order."""
    n, _, entries, metadata, size = read_header(path)
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) != size:
        raise SafetensorsError(f"{os.fspath(path)}: file changed while reading")
    start = 8 + n
    out = OrderedDict()
    for key, dtype, shape, begin, end in entries:
        if dtype in SUB_BYTE_BITS:
            arr = np.frombuffer(buf, dtype=np.uint8, count=end - begin, offset=start + begin)
        else:
            arr = np.frombuffer(buf, dtype=DTYPES[dtype], count=math.prod(shape),
                                offset=start + begin).reshape(shape)
        out[key] = (dtype, shape, arr)
    return out, metadata


def checkpoint_files(path):
    """The safetensors files of a checkpoint in base order (see module doc)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise SafetensorsError(f"{path}: no such file or folder")
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.isfile(index):
        with open(index, "rb") as f:
            try:
                obj = json.loads(f.read().decode("utf-8"), object_pairs_hook=_no_dup_pairs)
            except ValueError as e:
                raise SafetensorsError(f"{index}: invalid index JSON: {e}") from None
        wm = obj.get("weight_map") if isinstance(obj, dict) else None
        if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
            raise SafetensorsError(f"{index}: weight_map missing or not a map of strings")
        files = []
        for name in sorted(wm):  # sorted by name, as Python compares str (code points)
            if wm[name] not in files:
                files.append(wm[name])
        return [os.path.join(path, f) for f in files]
    if os.path.isfile(single):
        return [single]
    raise SafetensorsError(f"{path}: folder has neither model.safetensors nor "
                           f"model.safetensors.index.json")


def load_checkpoint(path):
    """Load a checkpoint (file, folder with model.safetensors, or sharded folder).

    Returns ``(OrderedDict name -> (dtype, shape, array), metadata)``; for shards the
    metadata is the first shard's ``__metadata__``, and the weight_map is checked against
    the shards' contents."""
    files = checkpoint_files(path)
    out = OrderedDict()
    metadata = None
    for i, fpath in enumerate(files):
        tensors, md = read_file(fpath)
        if i == 0:
            metadata = md
        for k, v in tensors.items():
            if k in out:
                raise SafetensorsError(f"{fpath}: tensor {k!r} appears in two shards")
            out[k] = v
    if len(files) > 1 or os.path.isdir(os.fspath(path)):
        index = os.path.join(os.fspath(path), "model.safetensors.index.json")
        if os.path.isfile(index):
            with open(index, "rb") as f:
                wm = json.loads(f.read())["weight_map"]
            owner = {}
            for fpath in files:
                for k in read_header(fpath)[2]:
                    owner[k[0]] = os.path.basename(fpath)
            if owner != wm:
                raise SafetensorsError(f"{index}: weight_map does not match the shards")
    return out, metadata


# ---------------------------------------------------------------------------- writing


def _normalise(tensors):
    out = OrderedDict()
    for name, spec in tensors.items():
        if isinstance(spec, np.ndarray):
            arr = spec
            dtype = _NUMPY_TO_ST.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">"
                                     else arr.dtype)
            if dtype is None:
                raise TypeError(f"{name}: cannot infer safetensors dtype of {arr.dtype}")
            shape = arr.shape
        elif len(spec) == 2:
            dtype, arr = spec
            shape = np.shape(arr)
        else:
            dtype, shape, arr = spec
        arr = np.ascontiguousarray(np.asarray(arr).astype(DTYPES[dtype], copy=False))
        shape = tuple(int(d) for d in shape)
        if arr.size != math.prod(shape):
            raise ValueError(f"{name}: array of {arr.size} elements for shape {shape}")
        out[name] = (dtype, shape, arr.reshape(shape))
    return out


def raw_bytes(arr: np.ndarray) -> bytes:
    """The little-endian raw bytes of an array as safetensors stores them."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr.tobytes()


def encode_header(entries, metadata=None, align=8):
    """Header bytes (without the length prefix) for ``entries`` = [(name, dtype, shape,
    nbytes)], laid out back to back in that order; padded with spaces to ``align``."""
    hdr = OrderedDict()
    if metadata is not None:
        hdr["__metadata__"] = dict(metadata)
    pos = 0
    for name, dtype, shape, nbytes in entries:
        hdr[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    text = json.dumps(hdr, separators=(",", ":")).encode("utf-8")
    if align:
        text += b" " * ((-(8 + len(text))) % align)
    return text


def save_file(path, tensors, metadata=None):
    """Write a safetensors file.  Header keys: ``__metadata__`` first (when given), then
    tensors in the mapping's order, which is also the data order."""
    t = _normalise(tensors)
    entries = [(k, d, s, a.nbytes) for k, (d, s, a) in t.items()]
    header = encode_header(entries, metadata)
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        for _, (_, _, arr) in t.items():
            f.write(raw_bytes(arr))
    os.replace(tmp, path)


def shard_name(i: int, n: int) -> str:
    return f"model-{i:05d}-of-{n:05d}.safetensors"


def save_sharded(folder, tensors, n_shards, metadata=None):
    """Write ``model-0000k-of-0000N.safetensors`` shards (consecutive runs of the mapping,
    balanced by bytes) plus ``model.safetensors.index.json``.  Returns the shard names."""
    t = _normalise(tensors)
    os.makedirs(folder, exist_ok=True)
    names = list(t)
    sizes = [t[k][2].nbytes for k in names]
    total = sum(sizes)
    n_shards = max(1, min(int(n_shards), len(names)))
    # shard of a tensor = where its byte midpoint falls; empty shards are dropped
    groups = [[] for _ in range(n_shards)]
    acc = 0
    for k, s in zip(names, sizes):
        mid = acc + s / 2
        idx = min(n_shards - 1, int(mid * n_shards / total)) if total else 0
        groups[idx].append(k)
        acc += s
    groups = [g for g in groups if g]
    n_shards = len(groups)
    weight_map = {}
    files = []
    for i, g in enumerate(groups, start=1):
        fname = shard_name(i, n_shards)
        files.append(fname)
        save_file(os.path.join(folder, fname), OrderedDict((k, t[k]) for k in g),
                  metadata if metadata is not None else {"format": "pt"})
        for k in g:
            weight_map[k] = fname
    index = {"metadata": {"total_size": total},
             "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return files
