"""Malformed inputs shared by the reference self-tests and the CLI tests: broken
safetensors files and invalid-but-resealed patch indexes."""

from __future__ import annotations

import json

import xxhash


def _raw_st(header: bytes, data: bytes = b"", n=None) -> bytes:
    return (len(header) if n is None else n).to_bytes(8, "little") + header + data


def malformed_safetensors_cases():
    """name -> bytes of a malformed safetensors file (shared with the CLI tests)."""
    j = lambda o: json.dumps(o).encode()  # noqa: E731
    ok_entry = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    return {
        "empty": b"",
        "short": b"\x01\x02\x03",
        "huge_header_len": _raw_st(b"{}", n=(1 << 64) - 1),
        "header_len_over_limit": _raw_st(b"{}", n=100_000_001),
        "header_past_end": _raw_st(b'{"a":1}', n=1000),
        "invalid_json": _raw_st(b"{not json}"),
        "invalid_utf8": _raw_st(b'{"w\xff": {}}'),
        "not_an_object": _raw_st(b"[1, 2]"),
        "duplicate_names": _raw_st(
            b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            b'"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', bytes(16)),
        "overlapping_offsets": _raw_st(j({"a": ok_entry, "b": {
            "dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}), bytes(12)),
        "gapped_offsets": _raw_st(j({"a": ok_entry, "b": {
            "dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}), bytes(20)),
        "backwards_offsets": _raw_st(j({"a": {
            "dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}), bytes(8)),
        "offsets_past_end": _raw_st(j({"a": {
            "dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}), bytes(8)),
        "size_mismatch": _raw_st(j({"a": {
            "dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}), bytes(8)),
        "shape_overflow": _raw_st(j({"a": {
            "dtype": "F32", "shape": [1 << 32, 1 << 32, 1 << 32], "data_offsets": [0, 8]}}),
            bytes(8)),
        "negative_shape": _raw_st(j({"a": {
            "dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}), bytes(8)),
        "unknown_dtype": _raw_st(j({"a": {
            "dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}), bytes(8)),
        "trailing_bytes": _raw_st(j({"a": ok_entry}), bytes(12)),
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
