"""The Python package as a user gets it: the wheel from tools/wheel, installed into a
scratch venv, run with PATH and LD_LIBRARY_PATH free of the Swift toolchain.

- every ELF file in the installed package resolves each library it needs to the wheel's
  own copies or to the manylinux allow-list of the wheel's tag (ldd);
- with torch and transformers (test extras from tools/setup), small Llama-shaped models
  (F32 tied and BF16, sharded): apply_ equals the CLI's apply tensor by tensor bit for
  bit, from_pretrained gives the same logits, numpy gives the bytes torch gives, wrong
  bases and tampered signed patches are refused (tools/tests/wheel_checks.py).

Wheel: ``$NEGPATCH_WHEEL``, else built here with tools/wheel. torch and transformers come
from the project's .venv (a .pth file in the scratch venv points at its site-packages);
negpatch itself only from the scratch venv, installed offline from the wheel.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import sysconfig
import time

import pytest

from conftest import REPO, REPORT

CHECKS = os.path.join(REPO, "tools", "tests", "wheel_checks.py")
# The libraries every manylinux system has, which a wheel takes from the system; the
# allow-list proper is the policy of the wheel's tag (auditwheel's manylinux-policy.json),
# which adds libz and libresolv (both used, through libhdf5 and libcurl) among others.
CORE = {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1"}
LOADER = {"ld-linux-x86-64.so.2", "linux-vdso.so.1"}


def policy_allow_list(wheel_name):
    import auditwheel

    tag = re.search(r"(manylinux_\d+_\d+)_x86_64", wheel_name).group(1)
    path = os.path.join(os.path.dirname(auditwheel.__file__), "policy", "manylinux-policy.json")
    with open(path) as f:
        policies = {p["name"]: p for p in json.load(f)}
    return set(policies[tag]["lib_whitelist"])


@pytest.fixture(scope="session")
def wheel():
    path = os.environ.get("NEGPATCH_WHEEL")
    if path:
        assert os.path.isfile(path), f"NEGPATCH_WHEEL={path} does not exist"
        return path
    start = time.time()
    r = subprocess.run([os.path.join(REPO, "tools", "wheel")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, f"tools/wheel failed\n{r.stderr[-4000:]}"
    path = os.path.join(REPO, r.stdout.strip().splitlines()[-1])
    REPORT.append(f"wheel: built by tools/wheel in {time.time() - start:.0f} s")
    return path


def clean_env(venv):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "NEGPATCH_BIN", "NEGPATCH_LIB", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join([os.path.join(venv, "bin"), "/usr/local/bin", "/usr/bin", "/bin"])
    env["VIRTUAL_ENV"] = venv
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


@pytest.fixture(scope="session")
def venv(wheel, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("negpatch-venv"))
    venv = os.path.join(root, "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    py = os.path.join(venv, "bin", "python")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The test extras (numpy, torch, transformers, safetensors) from the project's venv.
    with open(os.path.join(site, "zz_project_venv.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([py, "-m", "pip", "install", "--no-index", "--disable-pip-version-check", "-q", wheel],
                       capture_output=True, text=True, env=clean_env(venv))
    assert r.returncode == 0, f"pip install {wheel} failed\n{r.stdout}\n{r.stderr}"
    return {"venv": venv, "python": py, "site": site, "work": os.path.join(root, "work")}


def installed_elves(site):
    files = []
    for folder in glob.glob(os.path.join(site, "negpatch*")):
        for dirpath, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    if f.read(4) == b"\x7fELF":
                        files.append(path)
    return sorted(files)


def test_wheel_is_manylinux_and_holds_cli_library_and_header(wheel, venv):
    name = os.path.basename(wheel)
    assert re.fullmatch(r"negpatch-0\.1\.0-py3-none-manylinux_2_\d+_x86_64(\.manylinux\w+)*\.whl", name), name
    elves = installed_elves(venv["site"])
    names = {os.path.basename(p) for p in elves}
    assert {"negpatch", "libNegPatchABI.so"} <= names, names
    assert any(n.startswith("libzstd") for n in names) and any(n.startswith("libhdf5") for n in names), names
    assert os.path.isfile(os.path.join(venv["site"], "negpatch", "_native", "negpatch.h"))
    REPORT.append(f"wheel: {name}, {os.path.getsize(wheel) / 1e6:.1f} MB; bundled ELF files: {', '.join(sorted(names))}")


def test_every_bundled_binary_resolves_to_the_wheel_or_the_allow_list(wheel, venv):
    env = clean_env(venv["venv"])
    allowed = policy_allow_list(os.path.basename(wheel)) | LOADER
    assert CORE <= allowed
    from_system = set()
    lines = []
    for path in installed_elves(venv["site"]):
        out = subprocess.run(["ldd", path], capture_output=True, text=True, env=env)
        assert out.returncode == 0, f"ldd {path}: {out.stderr}"
        for line in out.stdout.splitlines():
            line = line.strip()
            if not line or line.startswith("statically linked"):
                continue
            soname = line.split()[0]
            target = line.split("=>", 1)[1].split("(")[0].strip() if "=>" in line else soname
            assert "not found" not in line, f"{path}: {line}"
            assert "/opt/swift" not in target, f"{path} links the Swift toolchain: {line}"
            inside = os.path.abspath(target).startswith(os.path.abspath(venv["site"]))
            name = os.path.basename(soname)
            assert inside or name in allowed, f"{path}: {soname} resolves to {target}, outside the wheel and the allow-list"
            if not inside:
                from_system.add(name)
            if "_native" in path and not inside:
                lines.append(f"{os.path.basename(path)}: {name}")
    REPORT.append("ldd, libraries the CLI and libNegPatchABI.so take from the system (all others from the wheel): "
                  + ", ".join(lines))
    REPORT.append(f"ldd: libraries taken from the system by any bundled file: {', '.join(sorted(from_system))}")


@pytest.fixture(scope="session")
def models(venv):
    run_check(venv, "make")
    return venv["work"]


def run_check(venv, check):
    os.makedirs(venv["work"], exist_ok=True)
    r = subprocess.run([venv["python"], CHECKS, check, venv["work"]], capture_output=True, text=True,
                       env=clean_env(venv["venv"]), cwd=venv["work"], timeout=900)
    assert r.returncode == 0, f"wheel check {check} failed (exit {r.returncode})\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    assert r.stdout.strip().endswith(f"{check}: ok"), r.stdout


@pytest.mark.parametrize("check", ["environment", "metadata", "apply_model", "from_pretrained", "numpy", "refusals",
                                   "cli_wrappers", "readme_example"])
def test_installed_package(models, venv, check):
    run_check(venv, check)
