"""Malformed inputs shared by the reference self-tests and the CLI tests: broken
safetensors files and invalid-but-resealed patch indexes."""

from __future__ import annotations

import json

import xxhash


def _raw_st(header: bytes, data: bytes = b"", n=None) -> bytes:
    return (len(header) if n is None else n).to_bytes(8, "little") + header + data


#: The valid checkpoint every malformed case is a broken copy of: two F32 tensors of
#: shape [2], back to back. Merged with copies of it, a malformed file that a reader let
#: through would merge cleanly, so only the reader's own check can refuse it.
PAIR = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}


def pair_with(**b) -> bytes:
    """A header like PAIR's with the entry of ``b`` changed as given."""
    entry = dict(PAIR["b"], **b)
    return json.dumps({"a": PAIR["a"], "b": entry}).encode()


def malformed_safetensors_cases():
    """name -> bytes of a malformed safetensors file (shared with the CLI tests), each a
    copy of PAIR with one defect."""
    j = json.dumps(PAIR).encode()
    return {
        "empty": b"",
        "short": b"\x01\x02\x03",
        "huge_header_len": _raw_st(j, bytes(16), n=(1 << 64) - 1),
        "header_len_over_limit": _raw_st(j, bytes(16), n=100_000_001),
        "header_past_end": _raw_st(j, bytes(16), n=len(j) + 1000),
        "invalid_json": _raw_st(j[:-1] + b",}", bytes(16)),
        "invalid_utf8": _raw_st(j.replace(b'"b"', b'"\xff"'), bytes(16)),
        "not_an_object": _raw_st(b"[" + j + b"]", bytes(16)),
        "duplicate_names": _raw_st(j[:-1] + b', "b": ' + json.dumps(PAIR["b"]).encode() + b"}", bytes(16)),
        "duplicate_field": _raw_st(json.dumps({"a": PAIR["a"]}).encode()[:-1] + b', "b": {"dtype": "F32", "dtype": "F32", '
                                   b'"shape": [2], "data_offsets": [8, 16]}}', bytes(16)),
        "overlapping_offsets": _raw_st(pair_with(data_offsets=[4, 12]), bytes(12)),
        "gapped_offsets": _raw_st(pair_with(data_offsets=[12, 20]), bytes(20)),
        "backwards_offsets": _raw_st(pair_with(data_offsets=[16, 8]), bytes(16)),
        "offsets_past_end": _raw_st(j, bytes(12)),
        "size_mismatch": _raw_st(pair_with(shape=[3]), bytes(16)),
        "shape_overflow": _raw_st(pair_with(shape=[1 << 32, 1 << 32, 1 << 32]), bytes(16)),
        "negative_shape": _raw_st(pair_with(shape=[-2]), bytes(16)),
        "unknown_dtype": _raw_st(pair_with(dtype="F33"), bytes(16)),
        "trailing_bytes": _raw_st(j, bytes(20)),
    }


#: case -> (tensor the error names or None, what the error line must say): the reader's
#: own message for the defect, so a file refused for any other reason fails the test.
MALFORMED_ERRORS = {
    "empty": (None, "file is 0 bytes, shorter than the 8-byte header length"),
    "short": (None, "file is 3 bytes, shorter than the 8-byte header length"),
    "huge_header_len": (None, "header length 18446744073709551615 exceeds the limit of 100000000 bytes"),
    "header_len_over_limit": (None, "header length 100000001 exceeds the limit of 100000000 bytes"),
    "header_past_end": (None, "runs past the end of the"),
    "invalid_json": (None, "header is not valid JSON"),
    "invalid_utf8": (None, "header is not valid JSON"),
    "not_an_object": (None, "header is a JSON array, expected an object"),
    "duplicate_names": (None, "duplicate key 'b'"),
    "duplicate_field": (None, "duplicate key 'dtype'"),
    "overlapping_offsets": ("b", "data_offsets [4, 12] overlap the previous tensor, which ends at 8"),
    "gapped_offsets": ("b", "gap of 4 bytes before data_offsets [12, 20]"),
    "backwards_offsets": ("b", "data_offsets [16, 8] run backwards"),
    "offsets_past_end": ("b", "data_offsets [8, 16] run past the end of the 12-byte data section"),
    "size_mismatch": ("b", "data_offsets [8, 16] hold 8 bytes but shape [3] of F32 needs 12"),
    "shape_overflow": ("b", "overflows"),
    "negative_shape": ("b", "is not a non-negative integer"),
    "unknown_dtype": ("b", "unsupported dtype 'F33'"),
    "trailing_bytes": (None, "tensor data ends at 16 but the data section holds 20 bytes"),
}


def rewrite_index(data: bytes, mutate) -> bytes:
    """Apply ``mutate`` to the parsed index and re-seal it (valid footer and checksum), so
    the semantic checks, not the checksum, must catch the problem."""
    size = len(data)
    off = int.from_bytes(data[size - 32:size - 24], "little")
    ln = int.from_bytes(data[size - 24:size - 16], "little")
    index = json.loads(data[off:off + ln])
    mutate(index)
    ib = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    return (data[:off] + ib + off.to_bytes(8, "little") + len(ib).to_bytes(8, "little")
            + xxhash.xxh64(ib).intdigest().to_bytes(8, "little") + b"NEGPATCH")


def index_mutations(ti=0):
    """name -> function mutating a valid index into an invalid one (shared with CLI tests;
    tensor ``ti`` must have at least 2 blocks, block 0 sparse)."""
    def t0(i):
        return i["tensors"][ti]

    def setp(path_fn, key, val):
        def f(i):
            path_fn(i)[key] = val
        return f
    return {
        "format": setp(lambda i: i, "format", "notapatch"),
        "version": setp(lambda i: i, "version", 2),
        "dup_tensor": lambda i: i["tensors"].append(json.loads(json.dumps(t0(i)))),
        "elements": setp(t0, "elements", 5),
        "shape_overflow": setp(t0, "shape", [1 << 40, 1 << 40]),
        "block_elements_not_64": setp(t0, "block_elements", 100),
        "block_elements_zero": setp(t0, "block_elements", 0),
        "block_count": lambda i: t0(i)["blocks"].pop(),
        "tensor_nonzeros_sum": lambda i: t0(i).__setitem__("nonzeros", t0(i)["nonzeros"] + 1),
        "block_nonzeros_too_big": lambda i: t0(i)["blocks"][0].__setitem__(
            "nonzeros", t0(i)["block_elements"] + 1),
        "dtype": setp(t0, "dtype", "F8"),
        "encoding": lambda i: t0(i)["blocks"][0].__setitem__("encoding", "rle"),
        "dense_with_mask": lambda i: t0(i)["blocks"][0].__setitem__("encoding", "dense"),
        "encoding_missing": lambda i: t0(i)["blocks"][0].pop("encoding"),
        "agreement_sum": lambda i: t0(i)["agreement"].__setitem__(
            0, t0(i)["agreement"][0] + 1),
        "agreement_length": lambda i: t0(i)["agreement"].append(0),
        "value_type": setp(t0, "value_type", "f16"),
        "part_size": lambda i: t0(i)["blocks"][0]["mask"].__setitem__(
            "size", t0(i)["blocks"][0]["mask"]["size"] + 1),
        "part_offset": lambda i: t0(i)["blocks"][0]["mask"].__setitem__(
            "offset", t0(i)["blocks"][0]["mask"]["offset"] + 1),
        "part_xxh64": lambda i: t0(i)["blocks"][0]["values"].__setitem__(
            "xxh64", "0000000000000000"),
        "huge_size": lambda i: t0(i)["blocks"][0]["values"].__setitem__("size", 1 << 62),
    }


def read_index(data: bytes) -> dict:
    """The parsed index of a .negpatch file's bytes."""
    size = len(data)
    off = int.from_bytes(data[size - 32:size - 24], "little")
    ln = int.from_bytes(data[size - 24:size - 16], "little")
    return json.loads(data[off:off + ln])


def replace_part(data: bytes, ti: int, b: int, kind: str, new: bytes, size=None) -> bytes:
    """The .negpatch with part ``kind`` of block ``b`` of tensor ``ti`` replaced by the
    stored bytes ``new`` and resealed: later parts move, the part's length, XXH64 (and
    ``size``, when given) and the index checksum are recomputed."""
    off = int.from_bytes(data[len(data) - 32:len(data) - 24], "little")
    index = read_index(data)
    part = index["tensors"][ti]["blocks"][b][kind]
    start, length = part["offset"], part["length"]
    delta = len(new) - length
    for tensor in index["tensors"]:
        for block in tensor["blocks"]:
            for k in ("mask", "values"):
                if k in block and block[k]["offset"] > start:
                    block[k]["offset"] += delta
    part["length"] = len(new)
    part["xxh64"] = f"{xxhash.xxh64(new).intdigest():016x}"
    if size is not None:
        part["size"] = size
    body = data[:start] + new + data[start + length:off]
    ib = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    return (body + ib + len(body).to_bytes(8, "little") + len(ib).to_bytes(8, "little")
            + xxhash.xxh64(ib).intdigest().to_bytes(8, "little") + b"NEGPATCH")
