"""Hugging Face integration: load a model with transformers and patch it before use."""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

from ._patch import Patch, PathLike, open as open_patch


def from_pretrained(auto_class: Any, base_dir: PathLike, patch: Union[PathLike, Patch], lam: Optional[float] = None,
                    *, trusted_keys: Optional[Sequence[PathLike]] = None, **kwargs: Any) -> Any:
    """``auto_class.from_pretrained(base_dir, **kwargs)`` with `patch` applied in place.

    `auto_class` is a transformers class with ``from_pretrained`` (``AutoModelForCausalLM``,
    ``LlamaForCausalLM``...), `base_dir` the local folder of the base checkpoint the patch
    was made for: its fingerprint is checked on the files before the model is loaded
    (NegPatchError ``"mismatch"`` otherwise). `patch` is a path (opened with
    `trusted_keys`, see :func:`negpatch.open`) or an open :class:`negpatch.Patch`. The model
    must keep the checkpoint's dtypes (leave ``torch_dtype`` unset or equal to them): the
    patched tensors are computed as ``negpatch apply`` computes them.
    """
    opened = patch if isinstance(patch, Patch) else open_patch(patch, trusted_keys)
    try:
        opened.check_base(os.fspath(base_dir))
        model = auto_class.from_pretrained(os.fspath(base_dir), **kwargs)
        opened.apply_(model, lam, check_base=False)
        return model
    finally:
        if opened is not patch:
            opened.close()
