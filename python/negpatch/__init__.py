"""NegPatch: machine unlearning as small, safe patches, applied in your process.

A patch holds a sparse task vector tau (NegMerge or a baseline merge of n fine-tuned
checkpoints) tied to its base checkpoint by a fingerprint. This package opens patches
through NegPatch's C library and patches tensors where they lie:
``theta = base - lam * tau``, in each tensor's own dtype, bit for bit what the
``negpatch apply`` command writes.

    >>> import negpatch
    >>> patch = negpatch.open("forget.negpatch")
    >>> patch.method, patch.n, patch.density
    >>> patch.apply_(model)                      # a torch.nn.Module or a state dict
    >>> tensors = negpatch.load_file("base/", "forget.negpatch", framework="pt")

Functions: :func:`open`, :func:`load_file`, :func:`merge`, :func:`apply`;
:mod:`negpatch.hf` for transformers. Errors are :class:`NegPatchError` with ``.code``,
``.file`` and ``.tensor``. The ``negpatch`` command (the bundled CLI) is installed too.
"""
from __future__ import annotations

from ._cli import apply, binary_path, merge
from ._errors import NegPatchError
from ._load import load_file
from ._patch import Patch, open
from . import hf

__version__ = "0.1.0"

__all__ = ["NegPatchError", "Patch", "open", "load_file", "merge", "apply", "hf", "binary_path", "__version__"]
