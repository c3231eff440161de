"""Atomic outputs under SIGKILL and full disks, with real CLI runs.

Each command is run once to completion for its reference output (every command is
deterministic), then many times with a SIGKILL at a random moment of its run. After each
kill the destination must be exactly as it was (absent, or its old bytes) or exactly the
reference output: never a partial or different file. The only other entries a kill may
leave are hidden temporary files or folders `.NAME.tmp-XXXXXX` beside the destination
(a killed process cannot remove them; they are never read and may be deleted at any time).

A full disk (a 1 MiB tmpfs, where it can be mounted) and a file size limit (RLIMIT_FSIZE,
always) must give exit 1, one error line naming the destination, and nothing left behind.

The total time of the kill loops is bounded (KILL_SECONDS, default 60 s).  A command joins
with one entry in `_commands`.
"""

from __future__ import annotations

import os
import random
import re
import resource
import shutil
import signal
import subprocess
import time

import pytest

from conftest import assert_error, file_bytes

KILL_SECONDS = float(os.environ.get("NEGPATCH_KILL_SECONDS", "60"))
TEMP = re.compile(r"^\.(.+)\.tmp-[A-Za-z0-9]{6}$")


def _snapshot(path):
    """The bytes at ``path``: None if absent, bytes for a file, {name: bytes} for a folder."""
    if not os.path.lexists(path):
        return None
    if os.path.isdir(path):
        return {n: file_bytes(os.path.join(path, n)) for n in sorted(os.listdir(path))}
    return file_bytes(path)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _commands(merged, dataset, key_pair):
    """(name, argv builder taking the destination, whether the destination may exist
    beforehand with other content)."""
    m = merged("F32")
    sharded = merged("BF16-sharded")
    return [
        ("merge", lambda out: ["merge", "--base", m.data.base, *m.data.fts, "-o", out, "--quiet"], True),
        ("apply", lambda out: ["apply", "--base", m.data.base, "--patch", m.patch, "-o", out, "--quiet"], True),
        ("apply-folder", lambda out: ["apply", "--base", sharded.data.base, "--patch", sharded.patch, "-o", out,
                                      "--quiet"], False),
        ("export", lambda out: ["export", m.patch, "-o", out, "--quiet"], True),
        ("sign", lambda out: ["sign", m.patch, "--key", key_pair, "-o", out], True),
        ("convert", lambda out: ["convert", m.patch, out, "--format", "hdf5", "--quiet"], True),
    ]


@pytest.fixture(scope="module")
def key_pair(cli, workdir):
    folder = os.path.join(str(workdir), "kill-keys")
    _remove(folder)
    os.makedirs(folder)
    cli.ok("keygen", "-o", os.path.join(folder, "key"))
    return os.path.join(folder, "key")


def _run_and_kill(binary, args, delay):
    p = subprocess.Popen([binary] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    _, err = p.communicate()
    return p.returncode, err.decode("utf-8", "replace")


def test_sigkill_never_leaves_a_partial_output(cli, merged, dataset, key_pair, workdir):
    commands = _commands(merged, dataset, key_pair)
    root = os.path.join(str(workdir), "kill")
    _remove(root)
    os.makedirs(root)
    rng = random.Random(20261123)
    # Reference outputs and run times.
    reference, duration = {}, {}
    for name, argv, _ in commands:
        out = os.path.join(root, f"reference-{name}")
        start = time.monotonic()
        cli.ok(*argv(out))
        duration[name] = time.monotonic() - start
        reference[name] = _snapshot(out)
        _remove(out)
    per_command = KILL_SECONDS / len(commands)
    report, problems = [], []
    for name, argv, may_exist in commands:
        folder = os.path.join(root, name)
        os.makedirs(folder)
        out = os.path.join(folder, "out")
        old = b"the previous contents of the destination\n"
        counts = {"unchanged": 0, "complete": 0, "runs": 0, "temporaries": 0}
        deadline = time.monotonic() + per_command
        while time.monotonic() < deadline:
            counts["runs"] += 1
            existed = may_exist and counts["runs"] % 2 == 0
            if existed:
                with open(out, "wb") as f:
                    f.write(old)
            before = _snapshot(out)
            # Mostly within the run, sometimes just past its end.
            _, stderr = _run_and_kill(cli.path, argv(out), rng.uniform(0.0, duration[name] * 1.1))
            after = _snapshot(out)
            if after == before:
                counts["unchanged"] += 1
            elif after == reference[name]:
                counts["complete"] += 1
            else:
                size = len(after) if isinstance(after, bytes) else sorted(after or {})
                problems.append(f"{name} run {counts['runs']}: destination is neither as it was nor complete "
                                f"({size}; stderr {stderr.strip()[:200]!r})")
            for entry in os.listdir(folder):
                if entry == "out":
                    continue
                match = TEMP.match(entry)
                if match and match.group(1) == "out":
                    counts["temporaries"] += 1
                else:
                    problems.append(f"{name} run {counts['runs']}: unexpected entry {entry!r} left beside the output")
                _remove(os.path.join(folder, entry))
            _remove(out)
        report.append(f"{name}: {counts['runs']} kills ({duration[name]:.2f} s per run): {counts['unchanged']} left the "
                      f"destination as it was, {counts['complete']} complete, {counts['temporaries']} hidden temporaries")
    print("\n" + "\n".join(report))
    assert not problems, "\n".join(problems[:20])
    for name, *_ in commands:
        line = next(r for r in report if r.startswith(name + ":"))
        assert " 0 kills" not in line, f"{name} was never killed: {line}"


# ---------------------------------------------------------------------------- full disk


def _limited(limit_bytes):
    def apply_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply_limit


@pytest.fixture(scope="module")
def small_disk(workdir):
    """A 1 MiB tmpfs, or None where mounting is not permitted."""
    mount = os.path.join(str(workdir), "small-disk")
    os.makedirs(mount, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount], capture_output=True)
    if r.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", mount], capture_output=True)


def _full_disk_cases(merged, key_pair):
    m = merged("F32")
    return [
        ("merge", lambda out: ["merge", "--base", m.data.base, *m.data.fts, "-o", out, "--quiet"]),
        ("apply", lambda out: ["apply", "--base", m.data.base, "--patch", m.patch, "-o", out, "--quiet"]),
        ("export", lambda out: ["export", m.patch, "-o", out, "--quiet"]),
        ("convert", lambda out: ["convert", m.patch, out, "--format", "hdf5", "--quiet"]),
        ("merge to HDF5", lambda out: ["merge", "--base", m.data.base, *m.data.fts, "-o", out, "--format", "hdf5",
                                       "--quiet"]),
    ]


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_a_full_disk_is_a_clean_error(cli, merged, key_pair, workdir, small_disk, how):
    if how == "tmpfs" and small_disk is None:
        pytest.skip("mounting a tmpfs is not permitted here; the rlimit case covers the write error")
    folder = small_disk if how == "tmpfs" else os.path.join(str(workdir), "size-limit")
    os.makedirs(folder, exist_ok=True)
    for name, argv in _full_disk_cases(merged, key_pair):
        out = os.path.join(folder, f"{name}.out")
        _remove(out)
        before = set(os.listdir(folder))
        p = subprocess.run([cli.path] + argv(out), capture_output=True, timeout=300, stdin=subprocess.DEVNULL,
                           preexec_fn=_limited(1 << 20) if how == "rlimit" else None)
        from conftest import Result
        r = Result(argv(out), p.returncode, p.stdout.decode(), p.stderr.decode())
        line = assert_error(r, out, ("No space left", "File too large"))
        assert set(os.listdir(folder)) == before, f"{name}: left {set(os.listdir(folder)) - before} ({line})"
