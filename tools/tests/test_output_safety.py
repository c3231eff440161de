"""Outputs never replace what a command reads, and links are written through, not replaced.

Every command refuses an output that is one of the files it reads, by identity (device and
inode), including the shards and the index behind a folder argument and any spelling of
them (a hard link, a symbolic link, a path through ``..``). A destination that is a
symbolic link is written where the link points, atomically beside the target; the link
stays a link (``formats/SECURITY.md``, "Outputs")."""

from __future__ import annotations

import os
import subprocess

import pytest

import gen_checkpoints
import safetensors_np as st
from conftest import DirWatch, assert_error, file_bytes


@pytest.fixture(scope="module")
def sharded_set(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("output-safety"))
    info = gen_checkpoints.generate(os.path.join(root, "set"), n=2, params=40_000,
                                    dtype="F32", sharded=3, seed=11)
    return info


def _snapshot(folder):
    return {name: file_bytes(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


def _shards(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))


@pytest.mark.parametrize("which", ["base-shard", "base-index", "ft-shard", "ft-index"])
def test_merge_refuses_to_overwrite_a_file_behind_a_folder_input(cli, sharded_set, tmp_path, which):
    base, fts = sharded_set["base"], sharded_set["fts"]
    folder = base if which.startswith("base") else fts[1]
    target = os.path.join(folder, "model.safetensors.index.json" if which.endswith("index")
                          else _shards(folder)[1])
    before = _snapshot(folder)
    watch = DirWatch(folder)
    # Named as it is, the output is refused for its checkpoint ending (a usage error)...
    r = cli.run("merge", "--base", base, *fts, "-o", target)
    assert r.returncode == 2 and "a checkpoint's ending" in r.stderr, r.describe()
    # ...and under a patch's name (a hard link), by identity: it is a file being read.
    alias = str(tmp_path / "alias.negpatch")
    os.link(target, alias)
    r = cli.run("merge", "--base", base, *fts, "-o", alias)
    assert_error(r, alias, "overwrite the input")
    assert _snapshot(folder) == before, "an input file was changed"
    assert watch.new() == [], f"left behind: {watch.new()}"


@pytest.mark.parametrize("spelling", ["hardlink", "symlink", "dotdot"])
def test_the_refusal_goes_by_identity_not_spelling(cli, sharded_set, tmp_path, spelling):
    base, fts = sharded_set["base"], sharded_set["fts"]
    shard = os.path.join(base, _shards(base)[0])
    if spelling == "hardlink":
        target = str(tmp_path / "alias.negpatch")
        os.link(shard, target)
    elif spelling == "symlink":
        target = str(tmp_path / "alias.negpatch")
        os.symlink(shard, target)
    else:
        alias = os.path.join(base, "alias.negpatch")
        os.link(shard, alias)
        target = os.path.join(base, "..", os.path.basename(base), "alias.negpatch")
    before = _snapshot(base)
    r = cli.run("merge", "--base", base, *fts, "-o", target)
    assert_error(r, "overwrite the input")
    assert _snapshot(base) == before, "an input file was changed"
    if spelling == "dotdot":
        os.remove(alias)


def test_convert_and_export_refuse_the_patch_they_read_under_another_name(cli, sharded_set, tmp_path):
    base, fts = sharded_set["base"], sharded_set["fts"]
    patch = str(tmp_path / "p.negpatch")
    cli.ok("merge", "--base", base, *fts, "-o", patch)
    original = file_bytes(patch)
    alias = str(tmp_path / "alias.h5")
    os.link(patch, alias)
    assert_error(cli.run("convert", patch, alias), "overwrite")
    exported = str(tmp_path / "alias.safetensors")
    os.link(patch, exported)
    assert_error(cli.run("export", patch, "-o", exported), "overwrite")
    assert file_bytes(patch) == original


def test_an_output_through_a_symlink_writes_the_target_and_keeps_the_link(cli, sharded_set, tmp_path):
    base, fts = sharded_set["base"], sharded_set["fts"]
    real = tmp_path / "real"
    real.mkdir()
    target = real / "p.negpatch"
    target.write_bytes(b"old content")
    link = tmp_path / "p.negpatch"
    os.symlink(target, link)
    cli.ok("merge", "--base", base, *fts, "-o", link)
    assert os.path.islink(link), "the link was replaced by a file"
    assert file_bytes(target).startswith(b"NEGPATCH")
    assert sorted(os.listdir(tmp_path)) == ["p.negpatch", "real"], "temp file beside the link"
    assert sorted(os.listdir(real)) == ["p.negpatch"]
    # A dangling link: the output is created where it points.
    dangling = tmp_path / "d.negpatch"
    os.symlink(real / "new.negpatch", dangling)
    cli.ok("merge", "--base", base, *fts, "-o", dangling)
    assert os.path.islink(dangling)
    assert file_bytes(real / "new.negpatch") == file_bytes(target)


def test_apply_to_stdout_through_a_link_redirected_to_a_file(cli, tmp_path):
    """`-o /dev/stdout > x.safetensors`: the link is followed to the file the shell opened,
    which is replaced atomically. The test uses a link of its own to /proc/self/fd/1 (what
    /dev/stdout is), so that a faulty build can only replace that link, never /dev/stdout."""
    if not os.path.exists("/proc/self/fd/1"):
        pytest.skip("no /proc/self/fd on this system")
    stdout_link = str(tmp_path / "stdout")
    os.symlink("/proc/self/fd/1", stdout_link)
    paths = gen_checkpoints.generate(str(tmp_path / "single"), n=2, params=20_000,
                                     dtype="BF16", seed=12)
    patch = str(tmp_path / "p.negpatch")
    cli.ok("merge", "--base", paths["base"], *paths["fts"], "-o", patch)
    expected = str(tmp_path / "expected.safetensors")
    cli.ok("apply", "--base", paths["base"], "--patch", patch, "-o", expected)
    redirected = tmp_path / "x.safetensors"
    with open(redirected, "wb") as out:
        p = subprocess.run([cli.path, "apply", "--base", paths["base"], "--patch", patch,
                            "-o", stdout_link], stdout=out, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 0, p.stderr
    assert os.path.islink(stdout_link), "the link was replaced"
    assert file_bytes(redirected) == file_bytes(expected)
    st.read_file(str(redirected))  # a valid checkpoint, not a summary line
    # Into a pipe there is no file to replace: refused, nothing written.
    p = subprocess.run([cli.path, "apply", "--base", paths["base"], "--patch", patch,
                        "-o", stdout_link], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    assert p.returncode == 1 and b"not a regular file" in p.stderr, p.stderr
    assert os.path.islink(stdout_link)
