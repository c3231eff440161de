"""What a careless or hostile user used to break, each case with the rule that now holds
(``formats/SECURITY.md``, "Careless and hostile use"): non-finite results, control
characters and very long names, names compared as bytes, linked sidecars, sweeps, strict
number syntax and usage errors, messages that say what a file is, silent mistakes, and the
dtypes and null metadata the safetensors reference implementation accepts."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
import unicodedata
from collections import OrderedDict

import numpy as np
import pytest

import gen_checkpoints
import patch_reader as pr
import safetensors_np as st
from conftest import DirWatch, assert_error, file_bytes


def write_raw(path, header: dict, data: bytes):
    """A safetensors file with exactly this header object (keys in order) and data."""
    text = json.dumps(header, ensure_ascii=False).encode("utf-8")
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + data)


def save(path, tensors):
    st.save_file(path, OrderedDict((k, v) for k, v in tensors.items()), {"format": "pt"})


def trio(root, base: dict, fts: list):
    os.makedirs(root, exist_ok=True)
    paths = [os.path.join(root, "base.safetensors")]
    save(paths[0], base)
    for k, ft in enumerate(fts):
        paths.append(os.path.join(root, f"ft_{k + 1}.safetensors"))
        save(paths[-1], ft)
    return paths


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("reliability"))
    info = gen_checkpoints.generate(os.path.join(root, "set"), n=2, params=30_000, dtype="F32", seed=21)
    patch = os.path.join(root, "p.negpatch")
    return root, info, patch


@pytest.fixture(scope="module")
def small_patch(cli, small):
    root, info, patch = small
    cli.ok("merge", "--base", info["base"], *info["fts"], "-o", patch)
    return info, patch


def usage_error(r, *mention):
    assert r.returncode == 2, r.describe()
    for m in mention:
        assert m in r.stderr, f"usage error does not mention {m!r}\n{r.describe()}"


# ------------------------------------------------------------- 5: infinity with exit 0


def test_lambdas_beyond_float32_are_usage_errors(cli, small_patch, tmp_path):
    info, patch = small_patch
    for lam in ("1e39", "1e300", "-1e39"):
        out = tmp_path / "o.safetensors"
        usage_error(cli.run("apply", "--base", info["base"], "--patch", patch, "--lambda", lam, "-o", out),
                    "float32's range")
        assert not out.exists()
        usage_error(cli.run("merge", "--base", info["base"], *info["fts"], "-o", tmp_path / "q.negpatch",
                            "--lambda", lam), "float32's range")
    usage_error(cli.run("merge", "--base", info["base"], *info["fts"], "-o", tmp_path / "q.negpatch",
                        "--method", "task-arithmetic", "--weights", "1e39,1"), "float32's range")
    assert list(os.listdir(tmp_path)) == []


def test_a_recorded_lambda_beyond_float32_is_refused(cli, small_patch, tmp_path):
    import patch_writer as pw
    info, patch = small_patch
    p = pr.read_patch(patch)
    forged = str(tmp_path / "forged.negpatch")
    pw.write_patch(forged, p.tensors, p.base_fingerprint, dict(p.metadata, **{"lambda": 1e308}))
    r = cli.run("apply", "--base", info["base"], "--patch", forged, "-o", tmp_path / "o.safetensors")
    assert_error(r, "float32's range")
    assert not (tmp_path / "o.safetensors").exists()


def test_merged_values_that_overflow_are_errors_naming_tensor_and_element(cli, tmp_path):
    base = {"w": np.zeros((2, 3), np.float32)}
    ft = {"w": np.full((2, 3), 2e38, np.float32)}
    paths = trio(str(tmp_path / "in"), base, [ft, dict(ft)])
    for method in ("task-arithmetic", "uniform"):
        out = tmp_path / f"{method}.negpatch"
        r = cli.run("merge", "--base", paths[0], *paths[1:], "-o", out, "--method", method)
        assert_error(r, "tensor 'w'", "element 0", "overflows float32")
        assert not out.exists()


def test_applied_values_that_overflow_are_errors_naming_tensor_and_element(cli, tmp_path):
    base = {"w": np.zeros((3,), np.float32), "h": np.full((4,), 60000, np.float16)}
    ft = {"w": np.full((3,), 1.5e38, np.float32), "h": np.full((4,), 50000, np.float16)}
    paths = trio(str(tmp_path / "in"), base, [ft, dict(ft)])
    patch = tmp_path / "m.negpatch"
    cli.ok("merge", "--base", paths[0], *paths[1:], "-o", patch, "--method", "uniform", "-q")
    # lambda 1: h = 60000 - (-10000) = 70000, past float16's 65504.
    r = cli.run("apply", "--base", paths[0], "--patch", patch, "-o", tmp_path / "a.safetensors")
    assert_error(r, "tensor 'h'", "element 0", "beyond the range of F16")
    # lambda -3: w = 0 - (-3 * 1.5e38), past float32's range.
    r = cli.run("apply", "--base", paths[0], "--patch", patch, "--lambda", "-3", "-o", tmp_path / "b.safetensors")
    assert_error(r, "tensor 'w'", "beyond the range of F32")
    assert sorted(os.listdir(tmp_path)) == ["in", "m.negpatch"]


# ---------------------------------------------------- 6: control characters in names

EVIL = "evil\x1b]0;pwned\x07\nnegpatch: error: forged\x00\u202e.weight"


def test_control_characters_in_names_are_escaped_everywhere(cli, tmp_path):
    base = {EVIL: np.zeros((3,), np.float32)}
    ft = {EVIL: np.array([1, 2, 3], np.float32)}
    paths = trio(str(tmp_path / "in"), base, [ft, {EVIL: np.array([1, 2, 4], np.float32)}])
    wrong = str(tmp_path / "in" / "wrong.safetensors")
    save(wrong, {EVIL: np.zeros((4,), np.float32)})
    r = cli.run("merge", "--base", paths[0], paths[1], wrong, "-o", tmp_path / "x.negpatch")
    line = assert_error(r, "\\x1B]0;pwned\\x07\\x0Anegpatch: error: forged\\x00\\u{202E}")
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr and "\u202e" not in r.stderr
    patch = tmp_path / "p.negpatch"
    cli.ok("merge", "--base", paths[0], *paths[1:], "-o", patch, "-q")
    audit = cli.ok("audit", patch, "--html", tmp_path / "r.html")
    for raw in ("\x1b", "\x07", "\x00", "\u202e"):
        assert raw not in audit.stdout, f"raw {raw!r} printed by audit"
        assert raw not in (tmp_path / "r.html").read_text("utf-8"), f"raw {raw!r} in the HTML report"
    assert "\nnegpatch: error: forged" not in audit.stdout
    assert "\\x1B]0;pwned" in audit.stdout
    verify = cli.ok("verify", patch)
    assert "\x1b" not in verify.stdout


def test_a_megabyte_name_gives_a_short_error_line(cli, tmp_path):
    name = "n" * 1_000_000
    base = {name: np.zeros((3,), np.float32)}
    paths = trio(str(tmp_path / "in"), base, [{name: np.ones((3,), np.float32)}])
    wrong = str(tmp_path / "in" / "wrong.safetensors")
    save(wrong, {name: np.zeros((4,), np.float32)})
    r = cli.run("merge", "--base", paths[0], paths[1], wrong, "-o", tmp_path / "x.negpatch")
    line = assert_error(r, "…")
    assert len(line) < 2000


# ------------------------------------------------------------ 7: names are bytes

NFC = unicodedata.normalize("NFC", "café.weight")
NFD = unicodedata.normalize("NFD", "café.weight")


def test_unicode_equivalent_names_are_different_tensors(cli, tmp_path):
    assert NFC != NFD and NFC.encode() != NFD.encode()
    base = {NFC: np.zeros((3,), np.float32)}
    ft = {NFD: np.ones((3,), np.float32)}
    paths = trio(str(tmp_path / "a"), base, [ft, ft])
    r = cli.run("merge", "--base", paths[0], *paths[1:], "-o", tmp_path / "x.negpatch")
    assert_error(r, "missing")
    both = {NFC: np.zeros((3,), np.float32), NFD: np.zeros((2,), np.float32)}
    fts = [{NFC: np.ones((3,), np.float32), NFD: np.full((2,), 2, np.float32)} for _ in range(2)]
    paths = trio(str(tmp_path / "b"), both, fts)
    patch = tmp_path / "both.negpatch"
    cli.ok("merge", "--base", paths[0], *paths[1:], "-o", patch)
    got = pr.read_patch(str(patch)).tensors
    assert [n.encode() for n in got] == [NFC.encode(), NFD.encode()]
    assert got[NFC].tolist() == [1, 1, 1] and got[NFD].tolist() == [2, 2]
    out = tmp_path / "both.safetensors"
    cli.ok("apply", "--base", paths[0], "--patch", patch, "-o", out)
    applied, _ = st.read_file(str(out))
    assert applied[NFD][2].tolist() == [-2, -2]


# ----------------------------------------------------------- 8: linked sidecars


def _folder_base(tmp_path):
    info = gen_checkpoints.generate(str(tmp_path / "set"), n=2, params=20_000, dtype="F32", sharded=2, seed=22)
    patch = str(tmp_path / "p.negpatch")
    return info, patch


def test_sidecar_links_leading_outside_are_refused(cli, tmp_path):
    info, patch = _folder_base(tmp_path)
    subprocess.run([cli.path, "merge", "--base", info["base"], *info["fts"], "-o", patch, "-q"], check=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, os.path.join(info["base"], "tokenizer.json"))
    out = tmp_path / "out"
    r = cli.run("apply", "--base", info["base"], "--patch", patch, "-o", out)
    assert_error(r, "tokenizer.json", "outside the checkpoint folder", "--allow-external-links")
    assert not out.exists() and [n for n in os.listdir(tmp_path) if n.startswith(".out")] == []
    cli.ok("apply", "--base", info["base"], "--patch", patch, "-o", out, "--allow-external-links")
    copied = out / "tokenizer.json"
    assert not os.path.islink(copied) and copied.read_text() == "top secret"


def test_a_hugging_face_cache_snapshot_is_followed_into_its_blobs(cli, tmp_path):
    info, patch = _folder_base(tmp_path)
    subprocess.run([cli.path, "merge", "--base", info["base"], *info["fts"], "-o", patch, "-q"], check=True)
    cache = tmp_path / "models--org--tiny"
    snapshot = cache / "snapshots" / "abc123"
    (cache / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name in os.listdir(info["base"]):
        blob = cache / "blobs" / ("blob-" + name)
        os.rename(os.path.join(info["base"], name), blob)
        os.symlink(os.path.join("..", "..", "blobs", "blob-" + name), snapshot / name)
    (cache / "blobs" / "cfg").write_text('{"model_type": "llama"}')
    os.symlink("../../blobs/cfg", snapshot / "config.json")
    out = tmp_path / "out"
    cli.ok("apply", "--base", snapshot, "--patch", patch, "-o", out, "--ignore-base-mismatch")
    assert not os.path.islink(out / "config.json")
    assert (out / "config.json").read_text() == '{"model_type": "llama"}'


# ------------------------------------------------------------------- 9: sweeps


def test_sweeps_leave_the_destination_as_it_was(cli, small_patch, tmp_path):
    info, patch = small_patch
    out = tmp_path / "sweep"
    bad = tmp_path / "bad.safetensors"
    save(str(bad), {"x": np.zeros((2,), np.float32)})
    r = cli.run("apply", "--base", bad, "--patch", patch, "--lambda", "0.5,1", "-o", out)
    assert r.returncode == 1, r.describe()
    assert os.listdir(tmp_path) == ["bad.safetensors"], "a sweep's error left files"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = cli.run("apply", "--base", info["base"], "--patch", patch, "--lambda", "0.5,1", "-o", out)
    assert_error(r, "not empty")
    assert os.listdir(out) == ["keep.txt"]
    os.remove(out / "keep.txt")
    cli.ok("apply", "--base", info["base"], "--patch", patch, "--lambda", "0.5,1", "-o", out)
    assert sorted(os.listdir(out)) == ["lambda-0.5.safetensors", "lambda-1.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["bad.safetensors", "sweep"]


# ------------------------------------------------ 11: exit codes and number syntax


@pytest.mark.parametrize("args,mention", [
    (["--method", "ties", "--density", "1.5"], "--density"),
    (["--method", "consensus", "--min-agree", "0"], "min-agree"),
    (["--method", "dare", "--drop", "1.0"], "--drop"),
    (["--method", "task-arithmetic", "--weights", "1,1,1"], "--weights"),
    (["--lambda", "0x10"], "0x10"),
    (["--lambda", " 1"], "--lambda"),
    (["--lambda", "inf"], "--lambda"),
    (["--lambda", "nan"], "--lambda"),
    (["--method", "ties", "--density", "0x1p-2"], "--density"),
])
def test_bad_option_values_are_usage_errors(cli, small, args, mention, tmp_path):
    _, info, _ = small
    usage_error(cli.run("merge", "--base", info["base"], *info["fts"], "-o", tmp_path / "x.negpatch", *args), mention)
    assert not (tmp_path / "x.negpatch").exists()


def test_negative_lambdas_and_one_syntax_for_apply(cli, small_patch, tmp_path):
    info, patch = small_patch
    a = tmp_path / "a.safetensors"
    cli.ok("apply", "--base", info["base"], "--patch", patch, "--lambda", "-1", "-o", a)
    b = tmp_path / "b.safetensors"
    cli.ok("apply", "--base", info["base"], "--patch", patch, "--lambda=-1", "-o", b)
    assert file_bytes(a) == file_bytes(b)
    cli.ok("merge", "--base", info["base"], *info["fts"], "-o", tmp_path / "n.negpatch", "--lambda", "-0.5", "-q")
    assert pr.read_patch(str(tmp_path / "n.negpatch")).metadata["lambda"] == -0.5
    for bad in ("0x10", " 1", "1 ", "+inf", "1e", ".", "1..2"):
        usage_error(cli.run("apply", "--base", info["base"], "--patch", patch, "--lambda", bad, "-o", tmp_path / "c.safetensors"))
    usage_error(cli.run("apply", "--base", info["base"], "--patch", patch, "--lambda", "0.1,0.10", "-o", tmp_path / "s"),
                "twice")
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------- 12: messages that mislead


def test_messages_say_what_a_file_is(cli, tmp_path):
    info = gen_checkpoints.generate(str(tmp_path / "set"), n=2, params=20_000, dtype="F32", sharded=2, seed=23)
    patch = str(tmp_path / "p.negpatch")
    subprocess.run([cli.path, "merge", "--base", info["base"], *info["fts"], "-o", patch, "-q"], check=True)
    index = os.path.join(info["base"], "model.safetensors.index.json")
    r = cli.run("merge", "--base", index, *info["fts"], "-o", tmp_path / "x.negpatch")
    line = assert_error(r, "JSON file", "give its folder")
    assert "header length" not in line
    # --base and --patch swapped, both ways round.
    shard = os.path.join(info["base"], sorted(n for n in os.listdir(info["base"]) if n.endswith(".safetensors"))[0])
    r = cli.run("apply", "--base", patch, "--patch", shard, "-o", tmp_path / "o.safetensors")
    line = assert_error(r, "swapped")
    assert "header length" not in line
    r = cli.run("apply", "--base", info["base"], "--patch", shard, "-o", tmp_path / "o")
    assert_error(r, "safetensors checkpoint", "swapped")


def test_shape_entries_are_shown_as_written(cli, tmp_path):
    other = str(tmp_path / "other.safetensors")
    save(other, {"w": np.zeros((4,), np.float32)})
    for shape, shown in ((["4e0"], '"4e0"'), ([4e0], "4.0"), ([-4], "-4")):
        path = str(tmp_path / "bad.safetensors")
        write_raw(path, {"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 16]}}, b"\0" * 16)
        r = cli.run("merge", "--base", path, other, "-o", tmp_path / "x.negpatch")
        line = assert_error(r, f"shape entry {shown} ")
        assert "number(" not in line and "string(" not in line


def test_a_dtype_mismatch_says_so_and_does_not_suggest_the_override(cli, tmp_path):
    base32 = {"w": np.arange(6, dtype=np.float32).reshape(2, 3) / 7}
    fts = [{"w": base32["w"] + np.float32(0.1 * (k + 1))} for k in range(2)]
    paths = trio(str(tmp_path / "f32"), base32, fts)
    patch = tmp_path / "p.negpatch"
    cli.ok("merge", "--base", paths[0], *paths[1:], "-o", patch, "-q")
    bf16 = str(tmp_path / "base-bf16.safetensors")
    st.save_file(bf16, OrderedDict(w=("BF16", (2, 3), st.from_f32("BF16", base32["w"]))), {"format": "pt"})
    for extra in ([], ["--ignore-base-mismatch"]):
        r = cli.run("apply", "--base", bf16, "--patch", patch, "-o", tmp_path / "o.safetensors", *extra)
        line = assert_error(r, "dtypes differ", "BF16", "F32")
        assert "--ignore-base-mismatch" not in line


def test_an_error_on_a_terminal_starts_its_own_line(cli, tmp_path):
    n = 600_000
    base = OrderedDict((f"t{i}", np.zeros((n,), np.float32)) for i in range(8))
    fts = [OrderedDict((k, np.full((n,), 1.0 + j, np.float32)) for k in base) for j in range(2)]
    fts[1]["t7"] = fts[1]["t7"].copy()
    fts[1]["t7"][5] = np.nan
    paths = trio(str(tmp_path / "in"), base, fts)
    master, slave = pty.openpty()
    p = subprocess.Popen([cli.path, "merge", "--base", paths[0], *paths[1:], "-o", str(tmp_path / "x.negpatch"),
                          "--block-size", "4096"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    seen = b""
    deadline = time.time() + 120
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif p.poll() is not None:
            break
    p.wait(timeout=60)
    os.close(master)
    assert p.returncode == 1, seen
    text = seen.decode("utf-8", "replace")
    error_at = text.index("negpatch: error:")
    before = text[:error_at]
    assert before == "" or before.endswith("\r\x1b[2K"), repr(text[-300:])


# ------------------------------------------------------------- 13: silent mistakes


def test_silent_mistakes_are_refused_or_warned(cli, small, tmp_path):
    _, info, _ = small
    b, f1, f2 = info["base"], info["fts"][0], info["fts"][1]
    out = tmp_path / "x.negpatch"
    usage_error(cli.run("merge", "--base", b, f1, f1, "-o", out), "given twice")
    os.link(f1, tmp_path / "alias.safetensors")
    usage_error(cli.run("merge", "--base", b, f1, tmp_path / "alias.safetensors", "-o", out), "given twice")
    usage_error(cli.run("merge", "--base", b, b, f2, "-o", out), "is the base checkpoint")
    usage_error(cli.run("merge", "--base", b, f1, f2, "-o", out, "--density", "0.3"), "--density is a parameter of")
    usage_error(cli.run("merge", "--base", b, f1, f2, "-o", out, "--method", "ties", "--seed", "3"), "--seed")
    usage_error(cli.run("merge", "--base", b, f1, f2, "-o", out, "--compression", "none"), "HDF5 patches only")
    usage_error(cli.run("merge", "--base", b, f1, f2, "-o", tmp_path / "x.safetensors"), "checkpoint's ending")
    assert not out.exists() and not (tmp_path / "x.safetensors").exists()
    r = cli.run("merge", "--base", b, f1, "-o", out, "-q")
    assert r.returncode == 0 and "warning: one fine-tuned checkpoint" in r.stderr, r.describe()
    # convert over a checkpoint, even with --format given
    target = tmp_path / "base.safetensors"
    target.write_bytes(file_bytes(b))
    usage_error(cli.run("convert", out, target, "--format", "negpatch"), "checkpoint's ending")
    assert file_bytes(target) == file_bytes(b)
    usage_error(cli.run("apply", "--base", b, "--patch", out, "-o", tmp_path / "y.negpatch"), "NegPatch file's ending")
    usage_error(cli.run("export", out, "-o", tmp_path / "y.h5"), "NegPatch file's ending")


# --------------------------------------------- 14: what the reference implementation reads


def test_null_metadata_and_every_reference_dtype_are_read(cli, tmp_path):
    w = np.arange(4, dtype=np.float32)
    extra = OrderedDict([("C64", (2, 8)), ("U16", (2, 2)), ("U32", (2, 4)), ("U64", (1, 8)),
                         ("F8_E8M0", (3, 1)), ("F8_E4M3FNUZ", (3, 1)), ("F8_E5M2FNUZ", (3, 1)),
                         ("F4", (4, None)), ("F6_E2M3", (4, None)), ("F6_E3M2", (8, None))])
    bits = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}

    def build(path, values, meta):
        header = OrderedDict()
        if meta is not ...:
            header["__metadata__"] = meta
        data = b""
        header["w"] = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
        data += values.astype("<f4").tobytes()
        for i, (dt, (count, size)) in enumerate(extra.items()):
            nbytes = count * size if size else count * bits[dt] // 8
            header[f"x{i}"] = {"dtype": dt, "shape": [count], "data_offsets": [len(data), len(data) + nbytes]}
            data += bytes((j * 7 + i) % 251 for j in range(nbytes))
        write_raw(path, header, data)

    base = str(tmp_path / "base.safetensors")
    build(base, w, None)
    fts = []
    for k in range(2):
        fts.append(str(tmp_path / f"ft{k}.safetensors"))
        build(fts[-1], w + 1 + k, {"format": "pt"} if k else None)
    # The reference implementation reads all of these files.
    from safetensors import safe_open
    for p in [base] + fts:
        with safe_open(p, "np") as f:
            assert len(list(f.keys())) == 1 + len(extra)
        st.read_file(p)  # and so does the project's NumPy reader
    patch = tmp_path / "p.negpatch"
    cli.ok("merge", "--base", base, *fts, "-o", patch, "-q")
    assert list(pr.read_patch(str(patch)).tensors) == ["w"]
    out = tmp_path / "o.safetensors"
    cli.ok("apply", "--base", base, "--patch", patch, "-o", out, "-q")
    got, _ = st.read_file(str(out))
    want, _ = st.read_file(base)
    for name in want:
        if name != "w":
            assert got[name][2].tobytes() == want[name][2].tobytes(), name
    # A sub-byte tensor that does not end on a byte boundary is refused, as the reference does.
    odd = str(tmp_path / "odd.safetensors")
    write_raw(odd, {"x": {"dtype": "F6_E2M3", "shape": [3], "data_offsets": [0, 2]}}, b"\0\0")
    r = cli.run("merge", "--base", odd, odd + "1", "-o", tmp_path / "z.negpatch")
    assert_error(r, "byte boundary")


# ------------------------------------------------- 15: large headers, duplicates found


def _raw_header_file(path, names):
    parts, pos = [], 0
    for name in names:
        parts.append(json.dumps(name, ensure_ascii=False) + f': {{"dtype":"F32","shape":[1],"data_offsets":[{pos},{pos + 4}]}}')
        pos += 4
    text = ("{" + ",".join(parts) + "}").encode("utf-8")
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"\0" * pos)


@pytest.mark.parametrize("count,dup", [(5, (1, 3)), (40, (2, 37)), (40, (20, 39))])
def test_duplicate_names_are_refused_in_small_and_large_headers(cli, tmp_path, count, dup):
    names = [f"t{i}" for i in range(count)]
    names[dup[1]] = names[dup[0]]
    path = str(tmp_path / "dup.safetensors")
    _raw_header_file(path, names)
    other = str(tmp_path / "other.safetensors")
    save(other, {"w": np.zeros((1,), np.float32)})
    assert_error(cli.run("merge", "--base", path, other, "-o", tmp_path / "x.negpatch"), "duplicate key")
    # Byte-different but canonically equivalent names are distinct keys at any size.
    names = [f"t{i}" for i in range(count)]
    names[dup[0]], names[dup[1]] = NFC, NFD
    _raw_header_file(path, names)
    fts = [str(tmp_path / f"ft{k}.safetensors") for k in range(2)]
    for ft in fts:
        _raw_header_file(ft, names)
    cli.ok("merge", "--base", path, *fts, "-o", tmp_path / "y.negpatch", "-q")
