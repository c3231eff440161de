"""Runs interrupted from outside, through the real CLI: inputs that shrink while they are
read (issue 17 item 2) and SIGINT, SIGTERM and SIGHUP in the middle of a run (item 10).

Both are made deterministic by stopping the process (SIGSTOP) at a known point of its
run, found by polling: for a shrinking input, the moment the input appears in
/proc/PID/maps (it is mapped but not yet read to its end); for a signal, the moment the
hidden temporary output `.NAME.tmp-XXXXXX` appears (the output is being written). The
input is then truncated, or the signal sent, and the process continued.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import assert_error, Result

TEMP = re.compile(r"^\..+\.tmp-[A-Za-z0-9]{6}$")
WAIT = 120


def _copy(src, dst):
    if os.path.isdir(src):
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
    return dst


def _start(binary, args):
    return subprocess.Popen([binary] + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def _stop_when(p, ready, what):
    """Polls ``ready()`` until it holds, then stops ``p``; fails if ``p`` ends first."""
    deadline = time.monotonic() + WAIT
    while not ready():
        if p.poll() is not None:
            out, err = p.communicate()
            pytest.fail(f"the command ended (exit {p.returncode}) before {what}\n{err.decode()[-2000:]}")
        if time.monotonic() > deadline:
            p.kill()
            pytest.fail(f"{what} did not happen in {WAIT} s")
    os.kill(p.pid, signal.SIGSTOP)


def _mapped(pid, path):
    target = os.path.realpath(path)
    try:
        with open(f"/proc/{pid}/maps") as f:
            return any(line.rstrip("\n").endswith(" " + target) for line in f)
    except OSError:
        return False


def _finish(p, args):
    try:
        out, err = p.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail(f"negpatch {' '.join(map(str, args))} hung after being continued")
    return Result([str(a) for a in args], p.returncode, out.decode("utf-8", "replace"),
                  err.decode("utf-8", "replace"))


def _leftovers(folder, keep):
    return sorted(e for e in os.listdir(folder) if e not in keep)


# ------------------------------------------------------------------ item 2: shrinking inputs


def _shrink_cases(m, sharded):
    """(name, files to copy, argv builder (copied paths, out), which copied path to truncate,
    the output written)."""
    return [
        ("merge", [m.data.base, *m.data.fts],
         lambda c, out: ["merge", "--base", c[0], *c[1:], "-o", out, "--quiet"], -1, "out.negpatch"),
        ("apply", [m.data.base, m.patch],
         lambda c, out: ["apply", "--base", c[0], "--patch", c[1], "-o", out, "--quiet"], 1, "out.safetensors"),
        ("apply-base", [m.data.base, m.patch],
         lambda c, out: ["apply", "--base", c[0], "--patch", c[1], "-o", out, "--quiet"], 0, "out.safetensors"),
        ("export", [m.patch], lambda c, out: ["export", c[0], "-o", out, "--quiet"], 0, "out.safetensors"),
        ("verify", [m.patch], lambda c, out: ["verify", c[0], "--quiet"], 0, None),
        ("convert", [m.patch], lambda c, out: ["convert", c[0], out, "--quiet"], 0, "out.h5"),
        ("convert-hdf5", [sharded], lambda c, out: ["convert", c[0], out, "--quiet"], 0, "out.negpatch"),
    ]


@pytest.fixture(scope="module")
def hdf5_patch(cli, merged, workdir):
    out = os.path.join(str(workdir), "interrupted-F32.h5")
    if not os.path.exists(out):
        cli.ok("convert", merged("F32").patch, out, "--quiet")
    return out


@pytest.mark.parametrize("case", ["merge", "apply", "apply-base", "export", "verify", "convert", "convert-hdf5"])
def test_an_input_that_shrinks_while_read_is_one_clean_error(cli, merged, hdf5_patch, tmp_path, case):
    m = merged("F32")
    name, files, argv, victim, output = next(c for c in _shrink_cases(m, hdf5_patch) if c[0] == case)
    inputs = tmp_path / "in"
    outdir = tmp_path / "out"
    inputs.mkdir()
    outdir.mkdir()
    copies = [_copy(f, str(inputs / f"{i}-{os.path.basename(f)}")) for i, f in enumerate(files)]
    target = copies[victim]
    size = os.path.getsize(target)
    out = str(outdir / output) if output else None
    args = argv(copies, out)
    p = _start(cli.path, args)
    _stop_when(p, lambda: _mapped(p.pid, target), f"{os.path.basename(target)} was mapped")
    os.truncate(target, 4096)
    os.kill(p.pid, signal.SIGCONT)
    r = _finish(p, args)
    assert r.returncode >= 0, f"killed by signal {-r.returncode}\n{r.describe()}"
    line = assert_error(r, target, "changed while being read", f"({size} bytes when opened, 4096 now)")
    assert "Fatal error" not in r.stderr and "backtrace" not in r.stderr.lower(), r.describe()
    assert line.count("negpatch: error:") == 1
    assert _leftovers(str(outdir), set()) == [], f"left behind: {_leftovers(str(outdir), set())}\n{r.describe()}"


# ------------------------------------------------------------------ item 10: signals


def _signal_cases(m, sharded):
    """(name, argv builder (out), output name, whether the output is a sweep folder)."""
    return [
        ("merge", lambda out: ["merge", "--base", m.data.base, *m.data.fts, "-o", out, "--quiet"], "out.negpatch"),
        ("apply", lambda out: ["apply", "--base", m.data.base, "--patch", m.patch, "-o", out, "--quiet"],
         "out.safetensors"),
        ("apply-sweep", lambda out: ["apply", "--base", m.data.base, "--patch", m.patch, "--lambda", "0.25,0.5,1",
                                     "-o", out, "--quiet"], "sweep"),
        ("apply-folder", lambda out: ["apply", "--base", sharded.data.base, "--patch", sharded.patch, "-o", out,
                                      "--quiet"], "folder"),
        ("convert", lambda out: ["convert", m.patch, out, "--format", "hdf5", "--quiet"], "out.h5"),
    ]


def _temporaries(folder):
    found = []
    for root, dirs, files in os.walk(folder):
        found += [os.path.join(root, e) for e in dirs + files if TEMP.match(e)]
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
@pytest.mark.parametrize("case", ["merge", "apply", "apply-sweep", "apply-folder", "convert"])
def test_a_signal_removes_the_temporary_output(cli, merged, tmp_path, case, sig):
    m, sharded = merged("F32"), merged("BF16-sharded")
    name, argv, output = next(c for c in _signal_cases(m, sharded) if c[0] == case)
    folder = tmp_path / "out"
    folder.mkdir()
    out = str(folder / output)
    args = argv(out)
    p = _start(cli.path, args)
    _stop_when(p, lambda: bool(_temporaries(str(folder))), "the temporary output appeared")
    os.kill(p.pid, sig)
    os.kill(p.pid, signal.SIGCONT)
    r = _finish(p, args)
    assert r.returncode == -sig, f"expected the process to end by {sig.name}\n{r.describe()}"
    assert _temporaries(str(folder)) == [], f"temporary outputs left: {_temporaries(str(folder))}"
    left = [e for e in os.listdir(folder)]
    # A sweep's OUT folder is created before its checkpoints (emptied here, see item 9).
    if case == "apply-sweep" and left == ["sweep"]:
        assert os.listdir(out) == [], f"the sweep folder holds {os.listdir(out)}"
    else:
        assert left == [], f"left behind: {left}"
