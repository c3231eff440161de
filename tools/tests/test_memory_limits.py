"""Address-space limits through the real CLI: under `ulimit -v`, merge, apply and verify
either succeed or fail with one clean line, never hang (libdispatch waited forever in
`_dispatch_temporary_resource_shortage`) or abort (`Fatal error: failed to allocate`).

Below about 95 MB the dynamic loader cannot map the Swift runtime's libraries (exit 127
before `main`), so the limits start at 100 MB.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import assert_error, Result


def _run_limited(binary, args, timeout, limit_kb):
    """Runs the CLI under ``ulimit -v limit_kb``; fails the test if it does not end in time."""
    argv = ["bash", "-c", f'ulimit -v {limit_kb}; exec "$@"', "negpatch", binary] + [str(a) for a in args]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail(f"negpatch {' '.join(map(str, args))} did not finish in {timeout} s under ulimit -v {limit_kb}")
    return Result([str(a) for a in args], p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))



LIMITS_KB = [100_000, 105_000, 110_000, 115_000, 120_000, 125_000, 130_000, 140_000, 150_000, 175_000, 200_000, 300_000, 600_000]


@pytest.mark.parametrize("command", ["merge", "apply", "verify"])
def test_an_address_space_limit_is_a_clean_error_or_a_success(cli, merged, tmp_path, command):
    m = merged("F32")
    outcomes = []
    for limit in LIMITS_KB:
        out = tmp_path / f"out-{limit}"
        out.mkdir()
        args = {
            "merge": ["merge", "--base", m.data.base, *m.data.fts, "-o", out / "p.negpatch", "--quiet"],
            "apply": ["apply", "--base", m.data.base, "--patch", m.patch, "-o", out / "o.safetensors", "--quiet"],
            "verify": ["verify", m.patch, "--base", m.data.base, "--quiet"],
        }[command]
        r = _run_limited(cli.path, args, timeout=60, limit_kb=limit)
        assert r.returncode in (0, 1), f"ulimit -v {limit}: exit {r.returncode}\n{r.describe()}"
        assert "Fatal error" not in r.stderr, f"ulimit -v {limit}\n{r.describe()}"
        if r.returncode == 1:
            line = assert_error(r)
            if command != "verify":
                assert os.listdir(out) == [], f"ulimit -v {limit}: left {os.listdir(out)}"
            outcomes.append(f"{limit}: {line[:90]}")
        else:
            outcomes.append(f"{limit}: ok")
    # The largest limit is far above what the command needs.
    assert outcomes[-1].endswith("ok"), "\n".join(outcomes)
    print("\n".join(outcomes))
