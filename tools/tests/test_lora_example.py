"""The LoRA digits example (tools/examples/digits/lora.py), reduced: n = 4 adapters, lambda
grid step 0.1. NegMerge of LoRA adapters forgets the digit, its applied checkpoint equals
the NumPy reference (lora_ref + apply_ref) bit for bit, and the SemEval-shaped TIES merge
of an under- and an over-forgetting adapter, added to the base, lands between the two."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "digits"))
import digits  # noqa: E402
import lora  # noqa: E402
import lora_ref  # noqa: E402
import merge_ref  # noqa: E402


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    try:
        binary = digits.find_binary()
    except FileNotFoundError as e:
        pytest.fail(str(e))
    return lora.run(n=4, grid_step=0.1, work=tmp_path_factory.mktemp("lora-digits"), binary=binary)


def test_negmerge_of_adapters_forgets_and_retains(result):
    base, neg = result["rows"][0], result["rows"][1]
    assert neg["method"] == "negmerge (LoRA)"
    assert base["forget_acc"] >= 0.9
    assert neg["forget_acc"] <= 0.10, neg
    assert neg["retain_acc"] >= 0.95 * base["retain_acc"], (neg, base)
    assert 0 < neg["density"] < 1


def test_applied_negmerge_equals_numpy_reference(result):
    neg = result["rows"][1]
    tau = lora_ref.merge_inputs(str(result["base_path"]), [str(f) for f in result["adapters"]], "negmerge")
    base = digits.load_checkpoint(result["base_path"])
    got = digits.load_checkpoint(neg["applied"])
    for name, t in tau.items():
        want = merge_ref.apply_ref("F32", base[name], t, neg["lambda"])
        assert got[name].tobytes() == want.tobytes(), name


def test_semeval_merge_lands_between_the_two_adapters(result):
    _, under, over, merged = result["semeval"]
    assert under["forget_acc"] > over["forget_acc"] and under["retain_acc"] > over["retain_acc"], result["semeval"]
    assert over["forget_acc"] <= merged["forget_acc"] <= under["forget_acc"], result["semeval"]
    assert over["retain_acc"] <= merged["retain_acc"] <= under["retain_acc"], result["semeval"]
    assert merged["forget_acc"] < 0.5 * under["forget_acc"], result["semeval"]
    # the patch records the direction, and applying it added the update
    import patch_reader
    assert patch_reader.read_patch(str(merged["patch"])).metadata["direction"] == "add"
