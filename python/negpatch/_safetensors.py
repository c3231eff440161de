"""A small safetensors reader for `negpatch.load_file` (numpy only, no safetensors
package): single files and sharded Hugging Face folders, every offset checked."""
from __future__ import annotations

import json
import os
import struct
from typing import Any, Dict, List, Tuple

import numpy as np

from ._errors import NegPatchError

INDEX_NAME = "model.safetensors.index.json"
MAX_HEADER = 100_000_000

# safetensors dtype -> (numpy dtype for the raw bytes, element size, torch dtype name)
DTYPES = {
    "F64": ("<f8", 8, "float64"), "F32": ("<f4", 4, "float32"), "F16": ("<f2", 2, "float16"),
    "BF16": ("<u2", 2, "bfloat16"), "I64": ("<i8", 8, "int64"), "I32": ("<i4", 4, "int32"),
    "I16": ("<i2", 2, "int16"), "I8": ("i1", 1, "int8"), "U8": ("u1", 1, "uint8"),
    "U16": ("<u2", 2, "uint16"), "U32": ("<u4", 4, "uint32"), "U64": ("<u8", 8, "uint64"),
    "BOOL": ("?", 1, "bool"), "F8_E4M3": ("u1", 1, "float8_e4m3fn"), "F8_E5M2": ("u1", 1, "float8_e5m2"),
    "F8_E8M0": ("u1", 1, "float8_e8m0fnu"), "F8_E4M3FNUZ": ("u1", 1, "float8_e4m3fnuz"),
    "F8_E5M2FNUZ": ("u1", 1, "float8_e5m2fnuz"), "C64": ("<c8", 8, "complex64"),
}
_TORCH_TO_ST = {"torch." + v[2]: k for k, v in DTYPES.items()}
_NUMPY_TO_ST = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "uint16": "U16",
                "uint32": "U32", "uint64": "U64", "bool": "BOOL", "complex64": "C64"}


def shard_files(path: str) -> List[str]:
    """The safetensors files of a checkpoint: the file itself, or a folder's shards (from
    its index, in first-appearance order, or its single model.safetensors)."""
    if not os.path.isdir(path):
        return [path]
    index = os.path.join(path, INDEX_NAME)
    if os.path.exists(index):
        with open(index, "rb") as f:
            try:
                weight_map = json.loads(f.read())["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise NegPatchError("malformed", f"{index}: not a safetensors index ({e})", file=index)
        shards: List[str] = []
        for shard in weight_map.values():
            if shard not in shards:
                shards.append(shard)
        return [os.path.join(path, s) for s in shards]
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        return [single]
    raise NegPatchError("io", f"{path}: no {INDEX_NAME} or model.safetensors in the folder", file=path)


def read_file(path: str) -> Dict[str, Tuple[str, np.ndarray]]:
    """Every tensor of one safetensors file: name -> (dtype, writable array of the raw
    element type with the tensor's shape), in file order."""
    def bad(message: str, tensor: str = None) -> NegPatchError:
        where = f"{path}: tensor '{tensor}': " if tensor else f"{path}: "
        return NegPatchError("malformed", where + message, file=path, tensor=tensor)

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad("shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise bad(f"header length {n} exceeds the file")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise bad(f"header is not JSON ({e})")
        entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
        entries.sort(key=lambda kv: kv[1]["data_offsets"][0])
        out: Dict[str, Tuple[str, np.ndarray]] = {}
        data_start = 8 + n
        for name, info in entries:
            dtype, shape, (begin, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
            if dtype not in DTYPES:
                raise bad(f"unknown dtype {dtype}", name)
            raw, itemsize, _ = DTYPES[dtype]
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if end - begin != count * itemsize or begin < 0 or data_start + end > size:
                raise bad(f"data offsets [{begin}, {end}] do not hold {dtype} {shape}", name)
            array = np.empty(shape, dtype=raw)
            f.seek(data_start + begin)
            if f.readinto(memoryview(array.reshape(-1).view(np.uint8))) != array.nbytes:
                raise NegPatchError("corrupt", f"{path}: tensor '{name}': truncated", file=path, tensor=name)
            out[name] = (dtype, array)
        return out


def raw_host_bytes(name: str, value: Any) -> Tuple[np.ndarray, str, List[int]]:
    """A tensor's raw bytes on the host, its safetensors dtype and shape."""
    if isinstance(value, np.ndarray):
        dtype = _NUMPY_TO_ST.get(value.dtype.name)
        return np.ascontiguousarray(value).reshape(-1).view(np.uint8), dtype or value.dtype.name, list(value.shape)
    t = value.detach().to("cpu").contiguous()
    dtype = _TORCH_TO_ST.get(str(t.dtype), str(t.dtype))
    import torch

    return t.reshape(-1).view(torch.uint8).numpy(), dtype, list(t.shape)
