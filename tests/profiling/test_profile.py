"""Parameter and multiply-add counts of the full models against the paper's Table III."""
import json

import pytest

from rnl_keras.models.tsm_resnet import tsm_resnet50
from rnl_keras.profiling import TABLE_III, count_macs

PAPER = {"resnet_variant": "torchvision", "use_conv_bias": False}  # the paper's backbone


@pytest.fixture(scope="module")
def counts():
    """Each model built once at 8 x 224 x 224, 400 classes (a few seconds each)."""
    out = {}
    for attention in ("none", "nl", "rnl", "se+rnl", "se"):
        model = tsm_resnet50(400, num_frames=8, attention=attention, image_size=224, **PAPER)
        out[attention] = count_macs(model)
    model = tsm_resnet50(400, attention="rnl", rnl_kwargs={"key_subsample": True}, **PAPER)
    out["rnl_sub"] = count_macs(model)
    model = tsm_resnet50(400, attention="nl", nl_kwargs={"subsample": True}, **PAPER)
    out["nl_sub"] = count_macs(model)
    return out


@pytest.mark.parametrize("attention", ["none", "nl", "rnl", "se+rnl", "se"])
def test_paper_convention_matches_table_iii(counts, attention):
    assert counts[attention]["paper"] / 1e9 == pytest.approx(TABLE_III[attention][0], rel=0.01)


@pytest.mark.parametrize("attention", ["none", "nl", "se"])
def test_parameter_counts_match_table_iii(counts, attention):
    # Trainable = PyTorch's parameters (BN moving statistics are buffers there).
    assert counts[attention]["params"]["trainable"] / 1e6 == pytest.approx(
        TABLE_III[attention][1], rel=0.01)


def test_rnl_parameters_are_the_depthwise_function():
    """35.48M in the paper = grouped F_theta weight + 0/1 mask; the same function is ~28.1M."""
    model = tsm_resnet50(400, attention="rnl", **PAPER)
    params = count_macs(model)["params"]["trainable"]
    baseline = 23_508_032 + 2048 * 400 + 400  # torchvision ResNet-50 without fc + fc
    per_res3 = 512 * 256 + 256 + 256 * 512 + 512 + 2 * 512 + 256 * 3 * 7 * 7
    per_res4 = 1024 * 512 + 512 + 512 * 1024 + 1024 + 2 * 1024 + 512 * 3 * 3 * 3
    assert params == baseline + 2 * per_res3 + 3 * per_res4


def attention_true_macs(key_subsample=False):
    """Independent: F_theta + 2 N_q N_k C' for 2 res3 (3x7x7) and 3 res4 (3x3x3) blocks."""
    total = 0
    for count, (t, h, c, k) in ((2, (8, 28, 512, 147)), (3, (8, 14, 1024, 27))):
        n = t * h * h
        n_k = t * (h // 2) ** 2 if key_subsample else n
        total += count * (n * (c // 2) * k + 2 * n * n_k * (c // 2))
    return total


def test_true_count_of_rnl_is_about_89_g(counts):
    expected = counts["rnl"]["paper"] + attention_true_macs()
    assert counts["rnl"]["true"] == expected
    assert counts["rnl"]["true"] / 1e9 == pytest.approx(89.5, abs=0.5)
    # res3: 20.1 GMACs of attention products per block (FACTS.md section 2).
    assert 2 * 6272 ** 2 * 256 / 1e9 == pytest.approx(20.1, abs=0.05)


def test_true_count_of_nl_and_subsampling(counts):
    nl_attention = 2 * 2 * 6272 ** 2 * 256 + 3 * 2 * 1568 ** 2 * 512
    assert counts["nl"]["true"] - counts["nl"]["paper"] == nl_attention
    nl_sub = 2 * 2 * 6272 * 1568 * 256 + 3 * 2 * 1568 * 392 * 512
    assert counts["nl_sub"]["true"] - counts["nl_sub"]["paper"] == nl_sub
    assert counts["rnl_sub"]["true"] - counts["rnl_sub"]["paper"] == attention_true_macs(True)
    assert counts["rnl_sub"]["paper"] == counts["rnl"]["paper"]


def test_baseline_has_no_hidden_cost(counts):
    assert counts["none"]["true"] == counts["none"]["paper"]
    assert counts["none"]["paper"] / 8 / 1e9 == pytest.approx(4.11, rel=0.01)  # per frame


def test_pipeline_writes_json(tmp_path, capsys):
    from pipelines.profile import main

    out = tmp_path / "p.json"
    main(["--attention=rnl", "--num_frames=8", "--image_size=224", "--num_classes=400",
          "--rnl_key_subsample", f"--json={out}"])
    printed = capsys.readouterr().out
    assert "paper GMACs" in printed and "true GMACs" in printed
    data = json.loads(out.read_text())
    rnl = data["models"]["rnl"]
    assert rnl["paper"] / 1e9 == pytest.approx(41.15, rel=0.01)
    assert rnl["true"] < 60e9  # sub-sampled keys: attention products / 4
