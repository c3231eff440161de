"""`Patch`: an open patch, its metadata, its tensors, and the in-place patcher."""
from __future__ import annotations

import ctypes
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _abi
from ._errors import NegPatchError
from ._tensors import TensorView

PathLike = Union[str, "os.PathLike[str]"]


class Patch:
    """A patch opened through the C ABI (use :func:`negpatch.open`).

    The metadata is read once at opening; tensors are decoded on demand, block by block,
    with every checksum verified as it is read. A Patch may be used as a context manager;
    :meth:`close` releases the file (also done when the object is collected).
    """

    def __init__(self, handle: int, path: str):
        self._handle: Optional[int] = handle
        self.path = path
        lib = _abi.lib()
        self.format: str = lib.negpatch_format(handle).decode()
        self.metadata: Dict[str, Any] = json.loads(_abi.take_string("negpatch_metadata_json", handle))
        count = lib.negpatch_tensor_count(handle)
        self._names: List[str] = [lib.negpatch_tensor_name(handle, i).decode("utf-8") for i in range(count)]
        self._index = {name: i for i, name in enumerate(self._names)}
        self._shapes: List[Tuple[int, ...]] = []
        self._dtypes: List[str] = []
        elements = nonzeros = 0
        for i in range(count):
            rank = lib.negpatch_tensor_rank(handle, i)
            shape_ptr = lib.negpatch_tensor_shape(handle, i)
            self._shapes.append(tuple(int(shape_ptr[d]) for d in range(rank)))
            self._dtypes.append(lib.negpatch_tensor_dtype(handle, i).decode())
            elements += lib.negpatch_tensor_elements(handle, i)
            nonzeros += lib.negpatch_tensor_nonzeros(handle, i)
        self._elements = elements
        self._nonzeros = nonzeros
        self._fingerprint: Optional[List[Dict[str, Any]]] = None

    # --- metadata -------------------------------------------------------------------

    @property
    def method(self) -> str:
        """The merge method's name, e.g. ``"negmerge"``."""
        return str(self.metadata["method"])

    @property
    def parameters(self) -> Dict[str, Any]:
        """The method's parameters, name to number or string."""
        return dict(self.metadata.get("parameters", {}))

    @property
    def n(self) -> int:
        """How many fine-tuned checkpoints were merged."""
        return int(self.metadata["n"])

    @property
    def inputs(self) -> List[str]:
        """The fine-tuned checkpoints' names, in merge order."""
        return list(self.metadata.get("inputs", []))

    @property
    def lam(self) -> float:
        """The recommended lambda (``theta = base - lam * tau``)."""
        return float(self.metadata["lambda"])

    @property
    def direction(self) -> str:
        """How tau is applied: ``"subtract"`` (unlearning, ``base - lam * tau``) or ``"add"``.
        Patches written before the field existed read ``"subtract"``."""
        return str(self.metadata.get("direction", "subtract"))

    @property
    def lossy(self) -> bool:
        """Whether any values are stored with less than float32 precision."""
        return bool(self.metadata.get("lossy", False))

    @property
    def density(self) -> float:
        """The share of nonzero task-vector elements over the patched tensors."""
        return self._nonzeros / self._elements if self._elements else 0.0

    @property
    def tensors(self) -> List[str]:
        """The names of the tensors the patch changes, in base order."""
        return list(self._names)

    def shape(self, name: str) -> Tuple[int, ...]:
        """The shape of tensor `name`."""
        return self._shapes[self._lookup(name)]

    def dtype(self, name: str) -> str:
        """The base dtype of tensor `name`, as safetensors spells it (``"BF16"``...)."""
        return self._dtypes[self._lookup(name)]

    @property
    def fingerprint(self) -> List[Dict[str, Any]]:
        """The base fingerprint: every base tensor's name, dtype, shape and XXH64 digest."""
        if self._fingerprint is None:
            self._fingerprint = json.loads(_abi.take_string("negpatch_fingerprint_json", self._live()))
        return [dict(e) for e in self._fingerprint]

    # --- reading --------------------------------------------------------------------

    def tensor(self, name: str) -> np.ndarray:
        """The dense task vector tau of tensor `name` as a float32 array of its shape."""
        i = self._lookup(name)
        out = np.zeros(self._shapes[i], dtype=np.float32)
        _abi.call("negpatch_decode", self._live(), name.encode(), out.ctypes.data_as(ctypes.c_void_p), out.size)
        return out

    def verify(self) -> None:
        """Checks every checksum of every block (as ``negpatch verify``); raises
        NegPatchError (code ``"corrupt"``) naming the first problem."""
        _abi.call("negpatch_verify", self._live())

    def check_base(self, base: Union[PathLike, Mapping[str, Any]]) -> None:
        """Checks that `base` is the checkpoint this patch was made for, else raises
        NegPatchError (code ``"mismatch"``) naming the first tensor that differs.

        `base` is a ``.safetensors`` file or a sharded folder (which must hold exactly the
        fingerprinted tensors), or a mapping name -> numpy array / torch tensor (such as a
        state dict), which must hold every fingerprinted tensor with its dtype, shape and
        content; other entries (tied aliases, buffers not saved) are not looked at.
        """
        if isinstance(base, (str, os.PathLike)):
            _abi.call("negpatch_check_base", self._live(), os.fsencode(base))
            return
        self._check_mapping(_as_mapping(base))

    # --- patching -------------------------------------------------------------------

    def apply_(self, target: Any, lam: Optional[float] = None, *, check_base: bool = True,
               allow_nonfinite: bool = False) -> int:
        """Patches `target` in place: every tensor the patch changes becomes
        ``base - lam * tau`` in its own dtype (F32, F16, BF16, F64), bit for bit what
        ``negpatch apply --lambda lam`` writes. Returns the number of tensors patched.

        `target` is a ``torch.nn.Module`` (its state dict), or a mapping name ->
        ``torch.Tensor`` or name -> ``numpy.ndarray``. Names are matched as the checkpoint
        names them. Host tensors are patched where they lie, through the C library, holding
        at most one block of decoded values per thread; tensors on another device (or
        non-contiguous views) are patched in a host copy that is then copied back. Tensors
        sharing memory (tied parameters) are patched once.

        Before anything changes: every patched tensor must be in the target with the
        patch's dtype and shape, and with `check_base` the target must match the base
        fingerprint (see :meth:`check_base`); else NegPatchError and nothing is changed.
        `lam` defaults to the patch's recommended lambda.
        """
        mapping = _as_mapping(target)
        lam = self.lam if lam is None else float(lam)
        views: List[TensorView] = []
        for name in self._names:
            if name not in mapping:
                raise NegPatchError("mismatch", f"{self.path}: tensor '{_escape(name)}': patched tensor missing from the target",
                                    file=self.path, tensor=_escape(name))
            view = TensorView(name, mapping[name])
            i = self._index[name]
            if view.dtype != self._dtypes[i] or view.shape != self._shapes[i]:
                raise NegPatchError("mismatch", f"{self.path}: tensor '{_escape(name)}': patch expects {self._dtypes[i]} "
                                    f"{list(self._shapes[i])}, the target has {view.dtype} {list(view.shape)}",
                                    file=self.path, tensor=_escape(name))
            views.append(view)
        if check_base:
            self._check_mapping(mapping)
        flags = _abi.ALLOW_NONFINITE if allow_nonfinite else 0
        handle = self._live()
        patched = 0
        seen = set()
        for view in views:
            if view.identity in seen:
                continue
            seen.add(view.identity)
            shape = _abi.shape_array(view.shape)
            _abi.call("negpatch_apply", handle, view.name.encode(), view.dtype.encode(), shape, len(view.shape),
                      ctypes.c_void_p(view.pointer), view.nbytes, ctypes.c_double(lam), flags)
            if view.write_back is not None:
                view.write_back()
            patched += 1
        return patched

    # --- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        """Releases the patch file; the Patch cannot be used afterwards."""
        if self._handle is not None:
            _abi.lib().negpatch_close(self._handle)
            self._handle = None

    def __enter__(self) -> "Patch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"<negpatch.Patch {self.path!r}: {self.method}, n={self.n}, {len(self._names)} tensors, "
                f"density {self.density:.4f}, lambda {self.lam}>")

    # --- internals ------------------------------------------------------------------

    def _live(self) -> int:
        if self._handle is None:
            raise NegPatchError("invalidArgument", f"{self.path}: the patch is closed", file=self.path)
        return self._handle

    def _lookup(self, name: str) -> int:
        i = self._index.get(name)
        if i is None:
            raise NegPatchError("invalidArgument", f"{self.path}: tensor '{_escape(name)}': not in the patch",
                                file=self.path, tensor=_escape(name))
        return i

    def _check_mapping(self, mapping: Mapping[str, Any]) -> None:
        handle = self._live()
        for entry in self.fingerprint:
            name = entry["name"]
            if name not in mapping:
                raise NegPatchError("mismatch", f"tensor '{_escape(name)}': tensor missing from the base: this is not the base the patch "
                                    f"{self.path} was made for", tensor=_escape(name))
            view = TensorView(name, mapping[name]) if entry["dtype"] in ("F32", "F16", "BF16", "F64") else None
            if view is None:
                _check_raw(handle, name, entry, mapping[name])
                continue
            shape = _abi.shape_array(view.shape)
            _abi.call("negpatch_check_base_tensor", handle, name.encode(), view.dtype.encode(), shape, len(view.shape),
                      ctypes.c_void_p(view.pointer), view.nbytes)


def _check_raw(handle: int, name: str, entry: Dict[str, Any], value: Any) -> None:
    """Checks a non-floating base tensor (ints, bools, FP8) by its raw bytes."""
    from ._safetensors import raw_host_bytes

    data, dtype, shape = raw_host_bytes(name, value)
    buf = np.ascontiguousarray(data)
    shape_c = _abi.shape_array(shape)
    _abi.call("negpatch_check_base_tensor", handle, name.encode(), dtype.encode(), shape_c, len(shape),
              ctypes.c_void_p(buf.ctypes.data), buf.nbytes)


def _as_mapping(target: Any) -> Mapping[str, Any]:
    if isinstance(target, Mapping):
        return target
    state_dict = getattr(target, "state_dict", None)
    if callable(state_dict):
        return state_dict(keep_vars=True)
    raise NegPatchError("invalidArgument", f"cannot patch a {type(target).__name__}: give a torch.nn.Module or a mapping name -> tensor")


def _escape(text: str) -> str:
    return "".join(f"\\u{{{ord(c):x}}}" if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F else c for c in text)


def open(path: PathLike, trusted_keys: Optional[Sequence[PathLike]] = None, *, signature: Optional[PathLike] = None) -> Patch:
    """Opens the patch at `path` (``.negpatch`` or ``.h5``, recognised by content).

    With `trusted_keys` (paths of public key files, ``KEY.pub`` from ``negpatch keygen``),
    the detached signature (`signature`, default ``PATH.sig``) must be a valid Ed25519
    signature by one of them over every byte of the patch; it is checked before any byte
    of the patch is parsed, else NegPatchError with code ``"untrusted"``.
    """
    keys = [os.fsencode(k) for k in (trusted_keys or [])]
    if trusted_keys is not None and not keys:
        raise NegPatchError("invalidArgument", f"{os.fspath(path)}: trusted_keys is empty: give at least one public key file, or None",
                            file=os.fspath(path))
    key_array = (ctypes.c_char_p * max(len(keys), 1))(*keys)
    handle = ctypes.c_void_p()
    _abi.call("negpatch_open", os.fsencode(path), key_array, len(keys),
              os.fsencode(signature) if signature is not None else None, ctypes.byref(handle))
    return Patch(handle.value, os.fspath(path))
