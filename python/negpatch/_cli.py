"""The bundled `negpatch` command: where it is, the console entry point, and the thin
wrappers `negpatch.merge` and `negpatch.apply`."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, List, NoReturn, Optional, Sequence, Union

from ._errors import NegPatchError

PathLike = Union[str, "os.PathLike[str]"]
_HERE = os.path.dirname(os.path.abspath(__file__))


def binary_path() -> str:
    """The CLI this package runs: ``_native/negpatch`` in the package, or the file named by
    the environment variable ``NEGPATCH_BIN`` (for a development build)."""
    return os.environ.get("NEGPATCH_BIN") or os.path.join(_HERE, "_native", "negpatch")


def main() -> NoReturn:
    """The ``negpatch`` console command: replaces this process with the bundled CLI."""
    binary = binary_path()
    try:
        os.execv(binary, [binary] + sys.argv[1:])
    except OSError as e:
        sys.stderr.write(f"negpatch: error: cannot run the bundled CLI {binary}: {e.strerror}\n")
        sys.exit(1)


def run(arguments: List[str]) -> str:
    """Runs the CLI with `arguments`; returns its standard output, raises NegPatchError
    (code ``"cli"``) with its error line when it fails."""
    binary = binary_path()
    try:
        done = subprocess.run([binary] + arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise NegPatchError("io", f"{binary}: cannot run the bundled CLI: {e.strerror}", file=binary)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        error = next((line for line in lines if line.startswith("negpatch: error: ")), lines[-1] if lines else "")
        message = error[len("negpatch: error: "):] if error.startswith("negpatch: error: ") else error
        raise NegPatchError("cli", message or f"negpatch {arguments[0]} exited with status {done.returncode}")
    return done.stdout


def _option(name: str, value: Any) -> List[str]:
    flag = "--" + name.replace("_", "-")
    if value is True:
        return [flag]
    if value is False or value is None:
        return []
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return [flag, str(value)]


def merge(base: PathLike, finetuned: Sequence[PathLike], output: PathLike, method: str = "negmerge",
          **parameters: Any) -> str:
    """Runs ``negpatch merge --base BASE FT... -o OUTPUT --method METHOD``; each keyword
    becomes an option (``lam=0.8`` -> ``--lambda 0.8``, ``min_agree=3`` -> ``--min-agree 3``,
    ``weights=[0, 1]`` -> ``--weights 0,1``, ``stats=True`` -> ``--stats``). Returns the
    CLI's summary; raises NegPatchError (code ``"cli"``) when it fails."""
    arguments = ["merge", "--base", os.fspath(base)] + [os.fspath(f) for f in finetuned]
    arguments += ["-o", os.fspath(output), "--method", method, "--quiet"]
    for name, value in parameters.items():
        arguments += _option("lambda" if name == "lam" else name, value)
    return run(arguments)


def apply(base: PathLike, patch: PathLike, output: PathLike, lam: Optional[float] = None,
          trusted_keys: Optional[Sequence[PathLike]] = None, **options: Any) -> str:
    """Runs ``negpatch apply --base BASE --patch PATCH -o OUTPUT [--lambda LAM]
    [--trusted-key KEY]...``: writes the unlearned checkpoint to disk. Other keywords become
    options (``ignore_base_mismatch=True``). Returns the CLI's summary; raises NegPatchError
    (code ``"cli"``) when it fails."""
    arguments = ["apply", "--base", os.fspath(base), "--patch", os.fspath(patch), "-o", os.fspath(output), "--quiet"]
    if lam is not None:
        arguments += ["--lambda", repr(float(lam))]
    for key in trusted_keys or []:
        arguments += ["--trusted-key", os.fspath(key)]
    for name, value in options.items():
        arguments += _option(name, value)
    return run(arguments)
