"""`negpatch audit`, `verify` and `diff` against NumPy, on patches the CLI merges here.

The patches are decoded by the independent reference reader (``tools/reference/
patch_reader.py``: from ``$NEGPATCH_REFERENCE`` if set, else this repository's copy; if
neither exists, by the small decoder below, written from formats/negpatch-v1.md), and
every figure of ``negpatch audit --json`` is recomputed with NumPy from the dense task
vectors and the index.

Binary: ``$NEGPATCH_BIN``, else ``.build/release/negpatch``, else ``.build/debug/negpatch``
(relative to the repository). Tests fail (never skip) when none exists; only the PNG
rendering test is skipped where Chromium is not installed.
"""

from __future__ import annotations

import html.parser
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLI_TIMEOUT = 300


# ---------------------------------------------------------------------------- reference


def _load_reader():
    for folder in (os.environ.get("NEGPATCH_REFERENCE"), os.path.join(REPO, "tools", "reference")):
        if folder and os.path.isfile(os.path.join(folder, "patch_reader.py")):
            sys.path.insert(0, folder)
            try:
                import patch_reader  # noqa: PLC0415
                return patch_reader
            finally:
                sys.path.remove(folder)
    return None


READER = _load_reader()


def _fallback_decode(path):
    """(index, OrderedDict name -> dense float32) of a .negpatch, from formats/negpatch-v1.md."""
    import zstandard  # noqa: PLC0415
    buf = open(path, "rb").read()
    assert buf[:8] == b"NEGPATCH" and buf[-8:] == b"NEGPATCH"
    offset, length = struct.unpack("<QQ", buf[-32:-16])
    index = json.loads(buf[offset:offset + length])
    dctx = zstandard.ZstdDecompressor()
    tensors = OrderedDict()
    for e in index["tensors"]:
        dense = np.zeros(e["elements"], dtype=np.float32)
        for b, block in enumerate(e["blocks"]):
            lo = b * e["block_elements"]
            c = min(e["block_elements"], e["elements"] - lo)

            def part(p):
                return dctx.decompress(buf[p["offset"]:p["offset"] + p["length"]], max_output_size=p["size"])

            raw = part(block["values"])
            k = len(raw) // 4
            vals = np.frombuffer(raw, np.uint8).reshape(4, k).T.copy().view("<f4").reshape(-1)
            if block["encoding"] == "sparse":
                bits = np.unpackbits(np.frombuffer(part(block["mask"]), np.uint8), bitorder="little")[:c].astype(bool)
                dense[lo:lo + c][bits] = vals
            else:
                dense[lo:lo + c] = vals
        tensors[e["name"]] = dense.reshape(e["shape"])
    return index, tensors


def decode(path):
    """(index JSON, OrderedDict name -> dense float32 array) of a patch."""
    if READER is not None:
        patch = READER.read_patch(path)
        return patch.index, patch.tensors
    return _fallback_decode(path)


# ---------------------------------------------------------------------------- CLI


def find_binary():
    env = os.environ.get("NEGPATCH_BIN")
    if env:
        return env if os.path.isfile(env) else None
    for rel in (".build/release/negpatch", ".build/debug/negpatch"):
        p = os.path.join(REPO, rel)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def run(*args, check=None):
    binary = find_binary()
    if binary is None:
        pytest.fail("no negpatch binary: build with `swift build` or set NEGPATCH_BIN")
    r = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=CLI_TIMEOUT)
    if check is not None and r.returncode != check:
        pytest.fail(f"$ negpatch {' '.join(map(str, args))}\n  exit {r.returncode} (expected {check})\n"
                    f"  stdout: {r.stdout[-3000:]}\n  stderr: {r.stderr[-3000:]}")
    return r


def audit_json(*args):
    return json.loads(run("audit", "--json", *args, check=0).stdout)


# ---------------------------------------------------------------------------- data


def write_safetensors(path, tensors):
    """tensors: list of (name, dtype 'F32'|'I64', ndarray) in data order."""
    header, blobs, offset = {}, [], 0
    for name, dtype, array in tensors:
        raw = np.ascontiguousarray(array, dtype="<f4" if dtype == "F32" else "<i8").tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def layout():
    t = [("model.position_ids", "I64", (1, 11)), ("model.embed_tokens.weight", "F32", (53, 16))]
    for i in range(3):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", "F32", (16,)), (p + "self_attn.q_proj.weight", "F32", (16, 16)),
              (p + "self_attn.k_proj.weight", "F32", (4, 16)), (p + "mlp.up_proj.weight", "F32", (43, 16)),
              (p + "mlp.down_proj.weight", "F32", (16, 43))]
    t += [("model.norm.weight", "F32", (16,)), ("model.logit_scale", "F32", ()), ("lm_head.weight", "F32", (53, 16))]
    return t


def make_checkpoints(folder, n=4, seed=0):
    rng = np.random.default_rng(seed)
    base, fts = [], [[] for _ in range(n)]
    for name, dtype, shape in layout():
        if dtype == "I64":
            arr = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
            base.append((name, dtype, arr))
            for ft in fts:
                ft.append((name, dtype, arr))
            continue
        b = rng.normal(0, 0.02, size=shape).astype(np.float32)
        base.append((name, dtype, b))
        agree = rng.random(shape) < 0.35
        direction = np.where(rng.random(shape) < 0.55, 1.0, -1.0)
        for ft in fts:
            mag = np.exp(rng.uniform(np.log(1e-5), np.log(1e-2), size=shape))
            sign = np.where(agree, direction, np.where(rng.random(shape) < 0.5, 1.0, -1.0))
            ft.append((name, dtype, (b + sign * mag).astype(np.float32)))
    paths = [os.path.join(folder, "base.safetensors")]
    write_safetensors(paths[0], base)
    for k, ft in enumerate(fts):
        paths.append(os.path.join(folder, f"ft_{k + 1}.safetensors"))
        write_safetensors(paths[-1], ft)
    return paths[0], paths[1:]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("audit"))
    base, fts = make_checkpoints(folder)
    patches = {
        "negmerge": os.path.join(folder, "negmerge.negpatch"),
        "consensus": os.path.join(folder, "consensus.negpatch"),
        "negmerge3": os.path.join(folder, "negmerge3.negpatch"),
    }
    run("merge", "--base", base, *fts, "-o", patches["negmerge"], "--block-size", 256, "-q", check=0)
    run("merge", "--base", base, *fts, "-o", patches["consensus"], "--method", "consensus", "--min-agree", 3,
        "--block-size", 128, "--lambda", 0.5, "-q", check=0)
    run("merge", "--base", base, *fts[:3], "-o", patches["negmerge3"], "--block-size", 640, "-q", check=0)
    return {"folder": folder, "base": base, "fts": fts, "patches": patches}


# ---------------------------------------------------------------------------- NumPy figures


def layer_of(name):
    """formats/audit-json.md: up to the first all-digit component, else the module."""
    parts = name.split(".")
    if len(parts) == 1:
        return name
    for i, c in enumerate(parts[:-1]):
        if c and c.isascii() and c.isdigit():
            return ".".join(parts[: i + 1]) + "."
    return ".".join(parts[:-1]) + "."


def index_figures(entries):
    elements = sum(e["elements"] for e in entries)
    nonzeros = sum(e["nonzeros"] for e in entries)
    mask = sum(b["mask"]["length"] for e in entries for b in e["blocks"] if "mask" in b)
    values = sum(b["values"]["length"] for e in entries for b in e["blocks"])
    agreement = None
    if all("agreement" in e for e in entries) and entries:
        agreement = np.sum([e["agreement"] for e in entries], axis=0).tolist()
    return {
        "tensors": len(entries), "elements": elements, "nonzeros": nonzeros,
        "density": nonzeros / elements if elements else 0.0,
        "blocks": sum(len(e["blocks"]) for e in entries),
        "dense_blocks": sum(b["encoding"] == "dense" for e in entries for b in e["blocks"]),
        "mask_bytes": mask, "values_bytes": values, "stored_bytes": mask + values,
        "bits_per_element": (mask + values) * 8 / elements if elements else 0.0,
        "agreement": agreement,
    }


def value_figures(arrays):
    v = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.float32)
    nz = v[v != 0]
    finite = nz[np.isfinite(nz)]
    count = len(nz)
    mags = np.abs(finite).astype(np.float64)
    exps = np.frexp(mags)[1] - 1
    hist = {"base": 2, "min_exponent": None, "counts": []}
    if len(exps):
        lo, hi = int(exps.min()), int(exps.max())
        hist = {"base": 2, "min_exponent": lo, "counts": np.bincount(exps - lo, minlength=hi - lo + 1).tolist()}
    positive, negative = int((finite > 0).sum()), int((finite < 0).sum())
    return {
        "positive": positive, "negative": negative, "nonfinite": count - len(finite),
        "positive_share": positive / count if count else 0.0, "negative_share": negative / count if count else 0.0,
        "l2_norm": float(np.sqrt(np.sum(finite.astype(np.float64) ** 2))),
        "max_abs": float(np.abs(finite).max()) if len(finite) else 0.0,
        "abs_histogram": hist,
    }


def assert_figures(got, want, what):
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-300), f"{what}: {key}"
        else:
            assert got[key] == value, f"{what}: {key}"


def expected_report(path, selection=None):
    index, taus = decode(path)
    entries = [e for e in index["tensors"] if selection is None or re.search(selection, e["name"])]
    tensors = []
    for e in entries:
        f = index_figures([e])
        f.update(name=e["name"], layer=layer_of(e["name"]), dtype=e["dtype"], shape=e["shape"])
        tensors.append((f, value_figures([taus[e["name"]]])))
    layers = OrderedDict()
    for e in entries:
        layers.setdefault(layer_of(e["name"]), []).append(e)
    groups = [(name, index_figures(es), value_figures([taus[e["name"]] for e in es])) for name, es in layers.items()]
    total = (index_figures(entries), value_figures([taus[e["name"]] for e in entries]))
    return index, tensors, groups, total


# ---------------------------------------------------------------------------- audit


@pytest.mark.parametrize("which", ["negmerge", "consensus", "negmerge3"])
def test_audit_values_match_numpy(work, which):
    path = work["patches"][which]
    report = audit_json("--values", path)
    index, tensors, groups, total = expected_report(path)

    assert report["schema"] == "negpatch-audit" and report["schema_version"] == 1
    assert report["metadata"] == index["metadata"]
    assert report["base_fingerprint"]["tensors"] == len(index["base_fingerprint"]["tensors"])
    assert report["file"]["size"] == os.path.getsize(path)
    assert report["file"]["parts_bytes"] + report["file"]["overhead_bytes"] == os.path.getsize(path)
    assert report["values_computed"] is True and report["not_computed"] == []
    integrity = report["integrity"]
    assert integrity["verdict"] == "verified" and integrity["problems"] == []
    assert integrity["blocks_checked"] == integrity["blocks_total"] == sum(len(e["blocks"]) for e in index["tensors"])
    assert integrity["parts_checked"] == integrity["parts_total"]

    assert [t["name"] for t in report["tensors"]] == [f["name"] for f, _ in tensors]
    for got, (want, values) in zip(report["tensors"], tensors):
        assert_figures(got, want, got["name"])
        assert_figures(got["values"], values, got["name"])
    assert [g["name"] for g in report["layers"]] == [name for name, _, _ in groups]
    for got, (name, want, values) in zip(report["layers"], groups):
        assert_figures(got, want, name)
        assert_figures(got["values"], values, name)
    assert_figures(report["total"], total[0], "total")
    assert_figures(report["total"]["values"], total[1], "total")


def test_audit_layers_are_the_documented_groups(work):
    report = audit_json(work["patches"]["negmerge"])
    assert [g["name"] for g in report["layers"]] == [
        "model.embed_tokens.", "model.layers.0.", "model.layers.1.", "model.layers.2.", "model.norm.", "model.", "lm_head."]
    assert report["layers"][1]["tensor_names"][0] == "model.layers.0.input_layernorm.weight"


def test_audit_default_reads_only_the_index(work):
    path = work["patches"]["negmerge"]
    quick = audit_json(path)
    full = audit_json("--values", path)
    assert quick["values_computed"] is False
    assert quick["not_computed"] == ["share positive", "share negative", "L2 norm", "max |value|", "|value| histogram"]
    assert "read only the index" in quick["values_note"]
    assert quick["integrity"]["verdict"] == "not-checked" and quick["integrity"]["blocks_checked"] == 0
    assert all(t["values"] is None for t in quick["tensors"]) and quick["total"]["values"] is None
    strip = lambda g: {k: v for k, v in g.items() if k != "values"}  # noqa: E731
    assert [strip(t) for t in quick["tensors"]] == [strip(t) for t in full["tensors"]]
    assert strip(quick["total"]) == strip(full["total"])

    # A damaged part is not read by the default audit, and is found by --values.
    index, _ = decode(path)
    part = index["tensors"][3]["blocks"][0]["values"]
    damaged = os.path.join(work["folder"], "damaged-part.negpatch")
    data = bytearray(open(path, "rb").read())
    data[part["offset"] + part["length"] // 2] ^= 0x04
    open(damaged, "wb").write(bytes(data))
    assert audit_json(damaged)["integrity"]["verdict"] == "not-checked"
    r = run("audit", "--json", "--values", damaged, check=1)
    report = json.loads(r.stdout)
    assert report["integrity"]["verdict"] == "damaged"
    assert index["tensors"][3]["name"] in report["integrity"]["problems"][0]


def test_audit_tensor_filter(work):
    path = work["patches"]["consensus"]
    pattern = r"layers\.[12]\..*_proj"
    report = audit_json("--values", "--tensors", pattern, path)
    index, tensors, groups, total = expected_report(path, selection=pattern)
    assert report["selection"] == {"filter": pattern, "tensors": len(tensors), "patch_tensors": len(index["tensors"])}
    assert [t["name"] for t in report["tensors"]] == [f["name"] for f, _ in tensors]
    assert [g["name"] for g in report["layers"]] == ["model.layers.1.", "model.layers.2."]
    assert_figures(report["total"], total[0], "total")
    assert_figures(report["total"]["values"], total[1], "total")
    assert report["integrity"]["verdict"] == "partial"
    run("audit", "--tensors", "(unclosed", path, check=2)


def test_audit_text_fits_100_columns(work):
    out = run("audit", "--values", work["patches"]["negmerge"], check=0).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 100, [line for line in lines if len(line) > 100]
    assert "every checksum verified" in out
    for heading in ("TENSORS", "LAYERS", "VALUES", "SIGN AGREEMENT", "|VALUE| HISTOGRAM"):
        assert any(line.startswith(heading) for line in lines), heading
    quick = run("audit", work["patches"]["negmerge"], check=0).stdout
    assert "not checked" in quick and "not computed" in quick and "--values" in quick
    assert max(len(line) for line in quick.splitlines()) <= 100


# ---------------------------------------------------------------------------- HTML


class _Charts(html.parser.HTMLParser):
    """Counts the bars of each <svg id=...> and notes anything that would load a resource."""

    def __init__(self):
        super().__init__()
        self.bars = OrderedDict()
        self.current = None
        self.external = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "link", "iframe", "img", "object", "embed") or "src" in a or "href" in a:
            self.external.append((tag, a))
        if tag == "svg" and "id" in a:
            self.current = a["id"]
            self.bars[self.current] = OrderedDict()
        if tag == "rect" and self.current and (a.get("class") or "").split()[:1] == ["bar"]:
            kind = " ".join((a.get("class") or "").split()[1:]) or "bar"
            self.bars[self.current][kind] = self.bars[self.current].get(kind, 0) + 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self.current = None


def test_html_report_has_every_chart(work):
    path = work["patches"]["negmerge"]
    out = os.path.join(work["folder"], "report.html")
    r = run("audit", "--json", "--html", out, path, check=0)
    report = json.loads(r.stdout)
    assert report["values_computed"] is True  # --html implies --values
    page = open(out, encoding="utf-8").read()
    charts = _Charts()
    charts.feed(page)
    layers = len(report["layers"])
    assert charts.external == []
    assert "http://" not in page and "https://" not in page and "url(" not in page
    assert charts.bars["chart-density"] == {"bar": layers}
    assert charts.bars["chart-signs"] == {"pos": layers, "neg": layers}
    assert charts.bars["chart-histogram"] == {"bar": len(report["total"]["values"]["abs_histogram"]["counts"])}
    assert charts.bars["chart-size"] == {"mask": layers, "values": layers}
    n = report["metadata"]["n"]
    assert sum(charts.bars["chart-agreement"].values()) == n + 1


def test_html_report_renders_in_chromium(work):
    if not any(shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    out = os.path.join(work["folder"], "render.html")
    run("audit", "--html", out, work["patches"]["consensus"], check=0)
    png = os.path.join(work["folder"], "render.png")
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "render_report.py"), out, "-o", png],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    head = open(png, "rb").read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width == 1240 and height > 1500


# ---------------------------------------------------------------------------- verify


def test_verify_intact_and_base(work):
    path = work["patches"]["negmerge"]
    r = run("verify", path, check=0)
    assert "intact" in r.stdout and "FAILED" not in r.stdout
    r = run("verify", path, "--base", work["base"], check=0)
    assert "made for this base" in r.stdout
    r = run("verify", path, "--base", work["fts"][0], check=1)
    assert "NOT made for this base" in r.stdout and "content differs" in r.stdout
    run("verify", check=2)
    run("verify", os.path.join(work["folder"], "missing.negpatch"), check=1)


def test_verify_catches_flipped_bytes(work):
    path = work["patches"]["consensus"]
    index, _ = decode(path)
    data = open(path, "rb").read()
    blocks = [b for e in index["tensors"] for b in e["blocks"]]
    mask = next(b["mask"] for b in blocks if "mask" in b)
    values = blocks[len(blocks) // 2]["values"]
    size = len(data)
    index_offset = struct.unpack("<Q", data[-32:-24])[0]
    offsets = {"magic": 3, "flags": 13, "mask part": mask["offset"] + mask["length"] // 2,
               "values part": values["offset"] + values["length"] - 1, "index": index_offset + 40,
               "footer length": size - 24, "footer checksum": size - 12, "trailing magic": size - 1}
    for what, offset in offsets.items():
        damaged = os.path.join(work["folder"], "flipped.negpatch")
        flipped = bytearray(data)
        flipped[offset] ^= 0x20
        open(damaged, "wb").write(bytes(flipped))
        r = run("verify", damaged)
        assert r.returncode == 1, f"flip in {what} at {offset} not caught:\n{r.stdout}\n{r.stderr}"
        assert "DAMAGED" in r.stdout, what


# ---------------------------------------------------------------------------- diff


def test_diff_with_itself(work):
    path = work["patches"]["negmerge"]
    report = json.loads(run("diff", "--json", path, path, check=0).stdout)
    assert report["same_base"] is True
    assert report["total"]["jaccard"] == 1 and report["total"]["sign_agreement"] == 1 and report["total"]["correlation"] == 1
    for t in report["tensors"]:
        if t["nonzeros_a"]:
            assert t["jaccard"] == 1 and t["sign_agreement"] == 1, t["name"]
        if t["common"] >= 2:
            assert t["correlation"] == 1, t["name"]
    text = run("diff", path, path, check=0).stdout
    assert re.search(r"^total\s.*\s1\.0000\s+100\.00%\s+1\.0000$", text, re.M), text


@pytest.mark.parametrize("pair", [("negmerge", "consensus"), ("negmerge3", "negmerge")])
def test_diff_matches_numpy(work, pair):
    a, b = (work["patches"][p] for p in pair)
    report = json.loads(run("diff", "--json", a, b, check=0).stdout)
    _, ta = decode(a)
    _, tb = decode(b)

    def figures(x, y):
        x, y = x.reshape(-1), y.reshape(-1)
        ina, inb = x != 0, y != 0
        common = ina & inb
        union = int((ina | inb).sum())
        xs, ys = x[common].astype(np.float64), y[common].astype(np.float64)
        corr = None
        if common.sum() >= 2 and xs.std() > 0 and ys.std() > 0:
            corr = float(np.corrcoef(xs, ys)[0, 1])
        return {"elements": x.size, "nonzeros_a": int(ina.sum()), "nonzeros_b": int(inb.sum()),
                "common": int(common.sum()), "union": union,
                "same_sign": int((np.signbit(x[common]) == np.signbit(y[common])).sum()),
                "jaccard": int(common.sum()) / union if union else None,
                "sign_agreement": float((np.signbit(x[common]) == np.signbit(y[common])).mean()) if common.any() else None,
                "correlation": corr}

    def compare(got, want, what):
        for key, value in want.items():
            if value is None or isinstance(value, int):
                assert got[key] == value, f"{what}: {key}"
            else:
                assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), f"{what}: {key}"

    assert [t["name"] for t in report["tensors"]] == list(ta)
    for t in report["tensors"]:
        compare(t, figures(ta[t["name"]], tb[t["name"]]), t["name"])
    all_a = np.concatenate([v.reshape(-1) for v in ta.values()])
    all_b = np.concatenate([tb[k].reshape(-1) for k in ta])
    compare(report["total"], figures(all_a, all_b), "total")


def test_diff_refuses_another_base(work, tmp_path):
    other_base, other_fts = make_checkpoints(str(tmp_path), n=2, seed=9)
    other = str(tmp_path / "other.negpatch")
    run("merge", "--base", other_base, *other_fts, "-o", other, "-q", check=0)
    r = run("diff", work["patches"]["negmerge"], other, check=1)
    assert "another base" in r.stderr
    r = run("diff", "--ignore-base-mismatch", "--json", work["patches"]["negmerge"], other, check=0)
    assert json.loads(r.stdout)["same_base"] is False
