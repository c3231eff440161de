"""The one exception type of the package."""
from __future__ import annotations

from typing import Optional


class NegPatchError(Exception):
    """A NegPatch failure a person can act on.

    Attributes:
        code: what kind of failure, as the library names it: ``"malformed"``,
            ``"corrupt"``, ``"mismatch"``, ``"invalidValue"``, ``"invalidArgument"``,
            ``"io"``, ``"untrusted"``; ``"cli"`` for a failure of the bundled command
            (:func:`negpatch.merge`, :func:`negpatch.apply`), whose message is its error line.
        file: the file concerned, or None.
        tensor: the tensor concerned, or None.
        message: one line, ``FILE: tensor 'NAME': what went wrong`` (control characters
            of names escaped).
    """

    def __init__(self, code: str, message: str, file: Optional[str] = None, tensor: Optional[str] = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.file = file
        self.tensor = tensor

    def __repr__(self) -> str:
        return f"NegPatchError(code={self.code!r}, message={self.message!r}, file={self.file!r}, tensor={self.tensor!r})"
