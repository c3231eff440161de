"""`negpatch.load_file`: read a base checkpoint and return it patched."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

import numpy as np

from ._errors import NegPatchError
from ._patch import Patch, PathLike, open as open_patch
from ._safetensors import DTYPES, read_file, shard_files


def load_file(base: PathLike, patch: Union[PathLike, Patch], lam: Optional[float] = None,
              framework: str = "np") -> Dict[str, Any]:
    """Loads the checkpoint `base` (a ``.safetensors`` file or a sharded folder) with
    `patch` applied, like ``safetensors.numpy.load_file`` / ``safetensors.torch.load_file``:
    a dict name -> array (``framework="np"``) or -> torch.Tensor (``"pt"``), shard by shard
    in file order.

    The base's fingerprint is checked first (NegPatchError ``"mismatch"`` for another
    checkpoint); each patched tensor is then patched in the memory it was read into,
    bit for bit what ``negpatch apply`` writes. With numpy, BF16 tensors need the
    ``ml_dtypes`` package (NumPy has no bfloat16); FP8 tensors need ``framework="pt"``.
    `patch` is a path or an open :class:`Patch`; `lam` defaults to the patch's.
    """
    if framework not in ("np", "pt"):
        raise NegPatchError("invalidArgument", f"framework must be 'np' or 'pt', got {framework!r}")
    opened = patch if isinstance(patch, Patch) else open_patch(patch)
    try:
        opened.check_base(base)
        tensors: Dict[str, Any] = {}
        for shard in shard_files(os.fspath(base)):
            for name, (dtype, raw) in read_file(shard).items():
                tensors[name] = _convert(name, dtype, raw, framework, shard)
        opened.apply_(tensors, lam, check_base=False)
        return tensors
    finally:
        if opened is not patch:
            opened.close()


def _convert(name: str, dtype: str, raw: np.ndarray, framework: str, path: str) -> Any:
    if framework == "pt":
        import torch

        t = torch.from_numpy(raw)
        target = getattr(torch, DTYPES[dtype][2])
        return t.view(target) if t.dtype != target else t
    if dtype == "BF16":
        try:
            import ml_dtypes
        except ImportError:
            raise NegPatchError("invalidArgument", f"{path}: tensor '{name}': BF16 needs the ml_dtypes package with "
                                "framework='np' (or use framework='pt')", file=path, tensor=name)
        return raw.view(ml_dtypes.bfloat16)
    if dtype.startswith("F8_"):
        raise NegPatchError("invalidArgument", f"{path}: tensor '{name}': {dtype} has no numpy dtype (use framework='pt')",
                            file=path, tensor=name)
    return raw
