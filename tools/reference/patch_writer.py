"""A minimal ``.negpatch`` v1 writer, written from formats/negpatch-v1.md.

It exists to test readers: ``patch_reader`` round trips through it, and the interop suite
feeds its patches to ``negpatch apply``/``export`` (a patch written by someone else).  It
is not tuned for size.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import zstandard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from patch_reader import MAGIC, shuffle, xxh64_hex  # noqa: E402
from safetensors_np import FLOAT_DTYPES  # noqa: E402


def build_patch(taus, base_fingerprint, metadata, block_elements=4096, encoding="auto",
                level=3, agreements=None, frame_mode="normal") -> bytes:
    """``taus``: OrderedDict name -> float32 array (shape = the tensor's).  The dtypes come
    from ``base_fingerprint``; every floating tensor there must be in ``taus``.

    ``encoding``: ``sparse``, ``dense`` or ``auto`` (per block, dense only when its parts
    are smaller).  ``agreements``: name -> the ``n + 1`` sign-statistics counts; by default
    ``[elements - nonzeros, 0, ..., 0, nonzeros]`` (what NegMerge's histogram looks like when
    every nonzero element is unanimous and the rest are all-zero).

    ``frame_mode`` makes deliberately invalid parts for reader tests (checksums and sizes in
    the index stay consistent, so only the frame rule of section 4 is broken):
    ``no_checksum`` / ``no_content_size`` omit that frame header field, ``two_frames``
    stores each part of 2+ bytes as two concatenated frames."""
    if block_elements <= 0 or block_elements % 64:
        raise ValueError("block_elements must be a positive multiple of 64")
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=frame_mode != "no_checksum",
                                    write_content_size=frame_mode != "no_content_size")
    n = int(metadata["n"])
    body = bytearray()
    entries = []

    def frame(raw: bytes):
        if frame_mode == "no_content_size":
            w = cctx.compressobj()  # streaming: the content size is not recorded
            f = w.compress(raw) + w.flush()
        elif frame_mode == "two_frames" and len(raw) >= 2:
            f = cctx.compress(raw[:len(raw) // 2]) + cctx.compress(raw[len(raw) // 2:])
        else:
            f = cctx.compress(raw)
        return f, {"length": len(f), "size": len(raw), "xxh64": xxh64_hex(f)}

    def place(f, p):
        p = dict(p, offset=16 + len(body))
        body.extend(f)
        return p

    for fe in base_fingerprint["tensors"]:
        if fe["dtype"] not in FLOAT_DTYPES:
            continue
        name = fe["name"]
        tau = np.asarray(taus[name], dtype=np.float32).reshape(-1)
        count = math.prod(fe["shape"])
        if tau.size != count:
            raise ValueError(f"{name}: {tau.size} values for shape {fe['shape']}")
        blocks = []
        for lo in range(0, count, block_elements):
            seg = tau[lo:lo + block_elements]
            nzmask = seg != 0
            m = int(nzmask.sum())
            mf, mp = frame(np.packbits(nzmask, bitorder="little").tobytes())
            sf, sp = frame(shuffle(seg[nzmask]))
            df, dp = frame(shuffle(seg))
            enc = encoding
            if enc == "auto":
                enc = "dense" if len(df) < len(mf) + len(sf) else "sparse"
            if enc == "sparse":
                blocks.append({"encoding": "sparse", "nonzeros": m, "mask": place(mf, mp),
                               "values": place(sf, sp)})
            else:
                blocks.append({"encoding": "dense", "nonzeros": m, "values": place(df, dp)})
        nz = int(np.count_nonzero(tau))
        ag = (list(agreements[name]) if agreements is not None
              else [count - nz] + [0] * (n - 1) + [nz])
        entries.append({
            "name": name, "dtype": fe["dtype"], "shape": list(fe["shape"]),
            "elements": count, "nonzeros": nz, "value_type": "f32",
            "block_elements": block_elements, "blocks": blocks, "agreement": ag,
        })
    index = {"format": "negpatch", "version": 1, "metadata": metadata,
             "base_fingerprint": base_fingerprint, "tensors": entries}
    ib = json.dumps(index, sort_keys=True, separators=(",", ":"),
                    ensure_ascii=False).encode("utf-8")
    index_offset = 16 + len(body)
    footer = (index_offset.to_bytes(8, "little") + len(ib).to_bytes(8, "little")
              + int(xxh64_hex(ib), 16).to_bytes(8, "little") + MAGIC)
    return (MAGIC + (1).to_bytes(4, "little") + (0).to_bytes(4, "little") + bytes(body)
            + ib + footer)


def write_patch(path, taus, base_fingerprint, metadata, **kw):
    data = build_patch(taus, base_fingerprint, metadata, **kw)
    with open(path, "wb") as f:
        f.write(data)
    return data


def default_metadata(method="negmerge", n=2, inputs=None, base="base.safetensors", lam=1.0,
                     parameters=None):
    return {"method": method, "parameters": parameters or {}, "n": n,
            "inputs": inputs or [f"ft_{k + 1}.safetensors" for k in range(n)], "base": base,
            "lambda": lam, "tool": "negpatch-reference-py 0", "lossy": False}
