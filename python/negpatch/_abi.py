"""ctypes bindings of the C ABI (``negpatch.h``, bundled as ``_native/negpatch.h``).

The library is ``_native/libNegPatchABI.so`` inside the package, or the file named by the
environment variable ``NEGPATCH_LIB`` (for a development build).
"""
from __future__ import annotations

import ctypes
import os
from typing import Optional

from ._errors import NegPatchError

ABI_VERSION = 1
ALLOW_NONFINITE = 1

_HERE = os.path.dirname(os.path.abspath(__file__))


class _Error(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_int),
        ("code_name", ctypes.c_char_p),
        ("message", ctypes.c_char_p),
        ("file", ctypes.c_char_p),
        ("tensor", ctypes.c_char_p),
    ]


_ErrorOut = ctypes.POINTER(ctypes.POINTER(_Error))
_i64p = ctypes.POINTER(ctypes.c_int64)
_charpp = ctypes.POINTER(ctypes.c_char_p)


def library_path() -> str:
    """The shared library this process loads."""
    return os.environ.get("NEGPATCH_LIB") or os.path.join(_HERE, "_native", "libNegPatchABI.so")


def _load() -> ctypes.CDLL:
    path = library_path()
    if not os.path.exists(path):
        raise NegPatchError("io", f"{path}: the NegPatch C library is missing (a broken install; set NEGPATCH_LIB for a development build)", file=path)
    lib = ctypes.CDLL(path)
    sig = {
        "negpatch_error_free": (None, [ctypes.POINTER(_Error)]),
        "negpatch_string_free": (None, [ctypes.c_void_p]),
        "negpatch_version": (ctypes.c_char_p, []),
        "negpatch_abi_version": (ctypes.c_int, []),
        "negpatch_open": (ctypes.c_int, [ctypes.c_char_p, _charpp, ctypes.c_size_t, ctypes.c_char_p,
                                         ctypes.POINTER(ctypes.c_void_p), _ErrorOut]),
        "negpatch_close": (None, [ctypes.c_void_p]),
        "negpatch_path": (ctypes.c_char_p, [ctypes.c_void_p]),
        "negpatch_format": (ctypes.c_char_p, [ctypes.c_void_p]),
        "negpatch_metadata_json": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), _ErrorOut]),
        "negpatch_fingerprint_json": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), _ErrorOut]),
        "negpatch_lambda": (ctypes.c_double, [ctypes.c_void_p]),
        "negpatch_tensor_count": (ctypes.c_size_t, [ctypes.c_void_p]),
        "negpatch_tensor_find": (ctypes.c_int64, [ctypes.c_void_p, ctypes.c_char_p]),
        "negpatch_tensor_name": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_size_t]),
        "negpatch_tensor_dtype": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_size_t]),
        "negpatch_tensor_rank": (ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_size_t]),
        "negpatch_tensor_shape": (_i64p, [ctypes.c_void_p, ctypes.c_size_t]),
        "negpatch_tensor_elements": (ctypes.c_int64, [ctypes.c_void_p, ctypes.c_size_t]),
        "negpatch_tensor_nonzeros": (ctypes.c_int64, [ctypes.c_void_p, ctypes.c_size_t]),
        "negpatch_decode": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t, _ErrorOut]),
        "negpatch_apply": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, _i64p, ctypes.c_size_t,
                                          ctypes.c_void_p, ctypes.c_size_t, ctypes.c_double, ctypes.c_uint, _ErrorOut]),
        "negpatch_check_base": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, _ErrorOut]),
        "negpatch_check_base_tensor": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, _i64p,
                                                      ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, _ErrorOut]),
        "negpatch_verify": (ctypes.c_int, [ctypes.c_void_p, _ErrorOut]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    if lib.negpatch_abi_version() != ABI_VERSION:
        raise NegPatchError("invalidArgument", f"{path}: C ABI version {lib.negpatch_abi_version()}, this package needs {ABI_VERSION}", file=path)
    return lib


_lib: Optional[ctypes.CDLL] = None


def lib() -> ctypes.CDLL:
    """The loaded library (loaded on first use)."""
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


def _text(value: Optional[bytes]) -> Optional[str]:
    return None if value is None else value.decode("utf-8", "replace")


def call(fn_name: str, *args) -> None:
    """Calls a status-returning ABI function, raising NegPatchError on failure."""
    error = ctypes.POINTER(_Error)()
    status = getattr(lib(), fn_name)(*args, ctypes.byref(error))
    if status != 0:
        if not error:
            raise NegPatchError("invalidArgument", f"{fn_name} failed with status {status}")
        e = error.contents
        exc = NegPatchError(_text(e.code_name) or str(status), _text(e.message) or "", _text(e.file), _text(e.tensor))
        lib().negpatch_error_free(error)
        raise exc


def take_string(fn_name: str, handle: int) -> str:
    """Calls a function returning a `char *` through an out-parameter and frees it."""
    out = ctypes.c_void_p()
    call(fn_name, handle, ctypes.byref(out))
    try:
        return ctypes.string_at(out.value).decode("utf-8")
    finally:
        lib().negpatch_string_free(out)


def shape_array(shape) -> "ctypes.Array[ctypes.c_int64]":
    """A C array of int64 extents."""
    return (ctypes.c_int64 * max(len(shape), 1))(*shape)
