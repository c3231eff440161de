"""What the patcher needs to know about a target tensor: where its bytes are, its dtype
in safetensors' spelling, and its shape. torch is imported only when a torch tensor is
given, so the package runs with numpy alone."""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np

from ._errors import NegPatchError

_NUMPY_DTYPES = {"float32": "F32", "float16": "F16", "float64": "F64", "bfloat16": "BF16"}
_TORCH_DTYPES = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float64": "F64"}


def is_torch_tensor(value: Any) -> bool:
    """Whether `value` is a torch.Tensor (without importing torch)."""
    cls = type(value)
    return any(c.__module__.startswith("torch") and c.__name__ in ("Tensor", "Parameter") for c in cls.__mro__)


class TensorView:
    """One target tensor seen as raw memory.

    `pointer` and `nbytes` address contiguous host memory holding the tensor's elements in
    row-major order; when the target itself is not such memory (a non-contiguous view, a
    tensor on a GPU), `pointer` addresses a host copy and `write_back` copies the patched
    values back into the target.
    """

    def __init__(self, name: str, value: Any):
        self.name = name
        self.write_back: Optional[Callable[[], None]] = None
        if isinstance(value, np.ndarray):
            self._init_numpy(value)
        elif is_torch_tensor(value):
            self._init_torch(value)
        else:
            raise NegPatchError("invalidArgument", f"tensor '{name}': a {type(value).__name__} is neither a numpy array nor a torch tensor", tensor=name)

    def _init_numpy(self, array: np.ndarray) -> None:
        dtype = _NUMPY_DTYPES.get(array.dtype.name)
        self.dtype = dtype or array.dtype.name
        self.shape: Tuple[int, ...] = tuple(int(d) for d in array.shape)
        self.identity = (array.__array_interface__["data"][0], array.nbytes)
        if dtype is None:
            self.pointer, self.nbytes, self._keep = 0, 0, None
            return
        if array.flags.c_contiguous and array.flags.writeable:
            host = array
        else:
            if not array.flags.writeable:
                raise NegPatchError("invalidArgument", f"tensor '{self.name}': the numpy array is read-only", tensor=self.name)
            host = np.ascontiguousarray(array)

            def write_back() -> None:
                array[...] = host

            self.write_back = write_back
        self._keep = host
        self.pointer = host.__array_interface__["data"][0]
        self.nbytes = host.nbytes

    def _init_torch(self, tensor: Any) -> None:
        import torch

        t = tensor.detach()
        dtype = _TORCH_DTYPES.get(str(t.dtype))
        self.dtype = dtype or str(t.dtype).replace("torch.", "")
        self.shape = tuple(int(d) for d in t.shape)
        self.identity = (t.untyped_storage().data_ptr() + t.storage_offset() * t.element_size(), t.numel() * t.element_size()) \
            if t.device.type == "cpu" else (id(t.untyped_storage()), t.storage_offset(), t.numel())
        if dtype is None:
            self.pointer, self.nbytes, self._keep = 0, 0, None
            return
        if t.device.type == "cpu" and t.is_contiguous():
            host = t
        else:
            # A host copy: patched there by the same kernels, then copied back, so the result
            # is bit for bit the CPU one on any device.
            host = t.to("cpu", copy=True).contiguous()

            def write_back() -> None:
                with torch.no_grad():
                    t.copy_(host)

            self.write_back = write_back
        self._keep = host
        self.pointer = host.data_ptr()
        self.nbytes = host.numel() * host.element_size()
