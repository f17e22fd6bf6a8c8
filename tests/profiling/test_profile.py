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
    # res3: 20.1 GMACs of attention products per block (docs/fidelity.md section 8).
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


SMALL = ["--num_frames=2", "--image_size=64", "--num_classes=5", "--stage_blocks=1,1,1,1",
         "--base_width=8", "--placement=res3:0"]


def test_pipeline_takes_the_trainers_ablation_flags(tmp_path, capsys):
    """--rnl_kernel_sizes / --se_reduction reach the profiled model: the res3 F_theta of C' = 32
    channels weighs 32 x 1 instead of 32 x 3 x 7 x 7; SE's W1 (C -> C/r) shrinks with r."""
    from pipelines.profile import main

    def params(*extra):
        out = tmp_path / "p.json"
        main(SMALL + [f"--json={out}", *extra])
        data = json.loads(out.read_text())
        return data, {a: m["params"]["trainable"] for a, m in data["models"].items()}

    data, default = params("--attention=rnl")
    _, region1 = params("--attention=rnl", "--rnl_kernel_sizes=res3:1x1x1")
    assert default["rnl"] - region1["rnl"] == 32 * (3 * 7 * 7 - 1)
    assert data["config"]["rnl_kernel_sizes"] == []
    _, r16 = params("--attention=se+rnl")
    data, r2 = params("--attention=se+rnl", "--se_reduction=2")
    channels = 4 * 8 * 2   # res3's output: 4 x base_width x 2
    assert r2["se+rnl"] - r16["se+rnl"] == 2 * channels * (channels // 2 - channels // 16) + \
        2 * (channels // 2 - channels // 16)   # W1, W2 and the BN's gamma, beta
    assert data["config"]["se_reduction"] == 2
    assert "Table III" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["--rnl_kernel_sizes=res3:2x2x2", "--rnl_kernel_sizes=res5:3x3x3",
                                 "--se_reduction=0"])
def test_pipeline_refuses_bad_ablation_flags(bad):
    from pipelines.profile import main

    with pytest.raises(SystemExit) as info:
        main(SMALL + ["--attention=rnl", bad])
    assert bad.split("=")[0] in str(info.value)
