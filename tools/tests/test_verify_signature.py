"""`negpatch verify --trusted-key`: a signed, intact patch passes; one changed after signing,
or signed by another key, fails with exit 1 before its content is read."""

from __future__ import annotations

import os
import shutil


def test_verify_checks_the_signature_first(cli, dataset, workdir):
    d = dataset("small")
    root = os.path.join(str(workdir), "verify-signature")
    os.makedirs(root, exist_ok=True)
    patch = os.path.join(root, "p.negpatch")
    cli.ok("merge", "--base", d.base, *d.fts, "-o", patch, "-q")
    key, other = os.path.join(root, "team.key"), os.path.join(root, "other.key")
    cli.ok("keygen", "-o", key)
    cli.ok("keygen", "-o", other)
    cli.ok("sign", patch, "--key", key)

    good = cli.run("verify", patch, "--trusted-key", key + ".pub", expect=0)
    assert "ok      signature" in good.stdout

    foreign = cli.run("verify", patch, "--trusted-key", other + ".pub", expect=1)
    assert "FAILED  signature" in foreign.stdout and "NOT TRUSTED" in foreign.stdout

    changed = os.path.join(root, "changed.negpatch")
    shutil.copy(patch, changed)
    shutil.copy(patch + ".sig", changed + ".sig")
    with open(changed, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    tampered = cli.run("verify", changed, "--trusted-key", key + ".pub", expect=1)
    assert "changed after signing" in tampered.stdout
    # The structural checks were not run on an untrusted file.
    assert "file and index" not in tampered.stdout
