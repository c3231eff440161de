"""Shared fixtures of the interop suite: the CLI binary, generated checkpoint sets and merged
patches (each made once per session), and helpers that explain a bit mismatch precisely.

Binary: ``$NEGPATCH_BIN``, else ``.build/release/negpatch``, else ``.build/debug/negpatch``
(relative to the repository).  Tests that need it fail (never skip) when none exists.

Size of the generated sets: ``NEGPATCH_TEST_PARAMS`` (default 2,000,000 per checkpoint).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools", "reference"))

import gen_checkpoints  # noqa: E402
import merge_ref  # noqa: E402
import safetensors_np as st  # noqa: E402

PARAMS = int(os.environ.get("NEGPATCH_TEST_PARAMS", "2000000"))
SMALL_PARAMS = 60_000
CLI_TIMEOUT = 300

#: generated sets: key -> (dtype, n, params, sharded, seed, misalign, merge lambda or None,
#: embed_elements).  F32 and BF16-sharded have embed_tokens/lm_head of ~1.1M elements, more
#: than one block at the CLI's default block size (2^20), ending in a partial block.
SETS = {
    "F32": ("F32", 4, PARAMS, 0, 1, False, None, 1_100_000),
    "F16": ("F16", 4, PARAMS, 0, 2, False, "0.75", 0),
    "BF16": ("BF16", 4, PARAMS, 0, 3, False, "0.25", 0),
    "F64": ("F64", 3, PARAMS // 2, 0, 4, False, None, 0),
    "BF16-sharded": ("BF16", 3, PARAMS, 3, 5, False, "0.75", 1_100_000),
    "small": ("F32", 3, SMALL_PARAMS, 0, 6, False, None, 0),
    "misaligned": ("F16", 3, SMALL_PARAMS, 0, 7, True, None, 0),
}
BIG_SETS = ["F32", "F16", "BF16", "F64", "BF16-sharded"]

# Lines printed in the terminal summary (max relative errors, timings).
REPORT: list = []


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("negpatch interop report")
        for line in REPORT:
            terminalreporter.write_line(line)


def find_binary():
    env = os.environ.get("NEGPATCH_BIN")
    if env:
        return env if os.path.isfile(env) else None
    for rel in (".build/release/negpatch", ".build/debug/negpatch"):
        p = os.path.join(REPO, rel)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


@dataclass
class Result:
    args: list
    returncode: int
    stdout: str
    stderr: str

    def describe(self):
        return (f"$ negpatch {' '.join(map(str, self.args))}\n  exit {self.returncode}\n"
                f"  stdout: {self.stdout[-2000:]!r}\n  stderr: {self.stderr[-2000:]!r}")


class Cli:
    def __init__(self, path):
        self.path = path

    def run(self, *args, expect=None):
        """Run the CLI; always asserts it did not die by a signal; with ``expect`` also
        asserts the exit status."""
        args = [str(a) for a in args]
        try:
            p = subprocess.run([self.path] + args, capture_output=True, timeout=CLI_TIMEOUT,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"negpatch {' '.join(args)} did not finish in {CLI_TIMEOUT} s")
        r = Result(args, p.returncode, p.stdout.decode("utf-8", "replace"),
                   p.stderr.decode("utf-8", "replace"))
        assert r.returncode >= 0, f"killed by signal {-r.returncode}\n{r.describe()}"
        if expect is not None:
            assert r.returncode == expect, f"expected exit {expect}\n{r.describe()}"
        return r

    def ok(self, *args):
        return self.run(*args, expect=0)


@pytest.fixture(scope="session")
def cli():
    path = find_binary()
    if path is None:
        pytest.fail("no negpatch binary: set NEGPATCH_BIN or build .build/release/negpatch "
                    "or .build/debug/negpatch (this suite never skips)", pytrace=False)
    import time
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(path)))
    REPORT.insert(0, f"binary: {path} (modified {stamp})")
    return Cli(path)


def assert_error(r: Result, *must_mention, status=1):
    """Exit ``status``, exactly one stderr line starting 'negpatch: error:' that mentions
    every string in ``must_mention`` (each item may be a tuple of alternatives)."""
    assert r.returncode == status, f"expected exit {status}\n{r.describe()}"
    lines = r.stderr.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}\n{r.describe()}"
    line = lines[0]
    assert line.startswith("negpatch: error:"), f"bad error line\n{r.describe()}"
    for m in must_mention:
        alts = m if isinstance(m, tuple) else (m,)
        assert any(a.lower() in line.lower() for a in alts), \
            f"error line does not mention {' or '.join(map(repr, alts))}\n{r.describe()}"
    return line


# ---------------------------------------------------------------------------- data sets


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("negpatch-interop")


class DataSet:
    def __init__(self, key, root):
        dtype, n, params, sharded, seed, misalign, lam, embed = SETS[key]
        self.key, self.dtype, self.n, self.lam = key, dtype, n, lam
        self.dir = os.path.join(root, "sets", key)
        info = gen_checkpoints.generate(self.dir, n=n, params=params, dtype=dtype,
                                        sharded=sharded, consensus=0.3, seed=seed,
                                        misalign=misalign, embed_elements=embed)
        self.base, self.fts = info["base"], info["fts"]
        self.sharded = sharded > 1
        self._loaded = None
        self._tau = None

    def load(self):
        if self._loaded is None:
            self._loaded = (st.load_checkpoint(self.base)[0],
                            [st.load_checkpoint(p)[0] for p in self.fts])
        return self._loaded

    def tau(self, method="negmerge", **params):
        """Reference tau (OrderedDict name -> float32 array)."""
        if method == "negmerge" and not params:
            if self._tau is None:
                b, fts = self.load()
                self._tau = merge_ref.merge_checkpoints(b, fts)
            return self._tau
        b, fts = self.load()
        return merge_ref.merge_checkpoints(b, fts, method, **params)

    def agreement(self):
        """name -> sign histogram (list of n + 1 counts) for every floating tensor."""
        b, fts = self.load()
        out = {}
        for name, (dt, shape, raw) in b.items():
            if dt in st.FLOAT_DTYPES:
                ts = merge_ref.task_vectors(dt, raw, [f[name][2] for f in fts])
                out[name] = (merge_ref.sign_histogram(ts).tolist() if raw.size
                             else [0] * (len(fts) + 1))
        return out


_SETS_CACHE: dict = {}
_MERGE_CACHE: dict = {}


@pytest.fixture(scope="session")
def dataset(workdir):
    def get(key):
        if key not in _SETS_CACHE:
            _SETS_CACHE[key] = DataSet(key, str(workdir))
        return _SETS_CACHE[key]
    return get


@dataclass
class Merged:
    data: DataSet
    patch: str
    result: Result
    lam: str  # the lambda the patch should carry, as the decimal given (or "1.0")


@pytest.fixture(scope="session")
def merged(dataset, cli, workdir):
    """Merge a set once with the CLI (method negmerge, the set's --lambda if any)."""
    def get(key):
        if key not in _MERGE_CACHE:
            d = dataset(key)
            out = os.path.join(str(workdir), "patches", f"{key}.negpatch")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            args = ["merge", "--base", d.base, *d.fts, "-o", out]
            if d.lam is not None:
                args += ["--lambda", d.lam]
            r = cli.run(*args)
            assert r.returncode == 0, f"merge of set {key} failed\n{r.describe()}"
            _MERGE_CACHE[key] = Merged(d, out, r, d.lam if d.lam is not None else "1.0")
        return _MERGE_CACHE[key]
    return get


# ---------------------------------------------------------------------------- comparisons


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def describe_mismatch(what, got, exp, limit=5):
    """A precise account of where two arrays differ bitwise ('' when they are identical)."""
    got = np.asarray(got)
    exp = np.asarray(exp)
    if got.shape != exp.shape:
        return f"{what}: shape {got.shape} != expected {exp.shape}"
    if got.dtype != exp.dtype:
        return f"{what}: dtype {got.dtype} != expected {exp.dtype}"
    gb, eb = _bits(got).reshape(-1), _bits(exp).reshape(-1)
    bad = np.flatnonzero(gb != eb)
    if len(bad) == 0:
        return ""
    lines = [f"{what}: {len(bad)} of {gb.size} elements differ bitwise"]
    g, e = got.reshape(-1), exp.reshape(-1)
    w = 2 * got.dtype.itemsize
    for i in bad[:limit]:
        lines.append(f"  [{i}] got {g[i]!r} (0x{int(gb[i]):0{w}x}) expected {e[i]!r} "
                     f"(0x{int(eb[i]):0{w}x})")
    return "\n".join(lines)


def max_rel_error(got, exp):
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    exp = np.asarray(exp, dtype=np.float64).reshape(-1)
    nz = exp != 0
    if not nz.any():
        return 0.0
    return float(np.max(np.abs(got[nz] - exp[nz]) / np.abs(exp[nz])))


class DirWatch:
    """Entries that appear in a folder while a command runs (temp files left behind, an
    output written despite an error)."""

    def __init__(self, folder):
        self.folder = str(folder)
        self.before = set(os.listdir(self.folder))

    def new(self):
        return sorted(set(os.listdir(self.folder)) - self.before)


def file_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def sentinel(path):
    """Create ``path`` with known content; returns the content (to check it is untouched)."""
    content = b"sentinel: an error must not modify this file\n"
    with open(path, "wb") as f:
        f.write(content)
    return content


def clean(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
