"""The paper's / release's recipes start from ImageNet: refused without weights unless
``--pretrained_weights=none`` is said, and every run records its start in summary.json."""
import hashlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import app

from rnl_keras.training.config import ConfigError, TrainConfig

from tests.training.helpers import REPO, TINY, data_flags, read_summary, run_train
from tests.training.test_flags import _config

CONFIGS = os.path.join(REPO, "configs")


@pytest.mark.parametrize("recipe", ["k400_paper", "ssv1_paper", "k400_released", "ssv1_released"])
def test_imagenet_recipes_refused_without_weights(recipe):
    flagfile = f"--flagfile={os.path.join(CONFIGS, recipe + '.flags')}"
    with pytest.raises(app.UsageError) as info:
        _config([flagfile, "--pretrained_weights="])          # the weights line taken away
    msg = str(info.value)
    assert msg.startswith("--pretrained_weights") and f"--recipe={recipe}" in msg
    assert "--pretrained_weights=none" in msg
    cfg = _config([flagfile, "--pretrained_weights=none"])   # said explicitly: accepted
    assert cfg.model.weights_arg() is None
    assert _config(["--train_list=x", "--num_classes=3", "--model_dir=m"]).model.recipe == ""


def test_recipe_weights_file_must_exist_before_any_work(tmp_path):
    argv = [f"--flagfile={os.path.join(CONFIGS, 'k400_paper.flags')}", f"--model_dir={tmp_path}/m"]
    cfg = _config(argv)
    with pytest.raises(ConfigError) as info:      # the Trainer checks it too (Python use)
        cfg.check_files()
    with pytest.raises(app.UsageError) as parsed:  # train.py: when the flags are parsed
        _config(argv, check_files=True)
    for msg in (str(info.value), str(parsed.value)):
        assert msg.startswith("--pretrained_weights") and "resnet50-0676ba61.pth" in msg \
            and "configs/k400_paper.flags" in msg
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not checked here")
    assert _config(argv + [f"--pretrained_weights={weights}"], check_files=True)


def test_cli_refuses_recipe_without_weights_and_records_explicit_none(tiny_data, tmp_path):
    """train.py exits non-zero before any work; with --pretrained_weights=none it trains and
    summary.json says the start was random (and holds the parameter-group table)."""
    refused = tmp_path / "refused"
    common = data_flags(tiny_data, val=False) + TINY + [
        "--recipe=k400_paper", "--batch_size=2", "--steps_per_epoch=1", "--epochs=1",
        "--checkpoint_every_steps=0"]
    code, out = run_train(common + [f"--model_dir={refused}"])
    assert code != 0 and "--pretrained_weights" in out and "--recipe=k400_paper" in out
    assert not refused.exists()
    model_dir = tmp_path / "random"
    code, out = run_train(common + [f"--model_dir={model_dir}", "--pretrained_weights=none",
                                    "--param_groups=release"])
    assert code == 0, out[-3000:]
    summary = read_summary(str(model_dir))
    assert summary["start"] == {"start": "random"}
    assert summary["recipe"] == "k400_paper"
    assert summary["param_groups"]["policy"] == "release"
    groups = {g["group"]: g for g in summary["param_groups"]["groups"]}
    assert (groups["lr5_weight"]["lr_mult"], groups["lr10_bias"]["lr_mult"]) == (5, 10)
    with open(model_dir / "param_groups.json") as f:
        per_variable = json.load(f)
    assert per_variable["fc/bias"] == ["lr10_bias", 10, 0]
    assert sum(g["variables"] for g in groups.values()) == len(per_variable)


def test_summary_records_the_weights_file_and_the_paper_groups(tmp_path):
    """A torchvision ResNet-50 start (.npz of a random state dict): summary.json names the file
    and its sha256, the backbone starts from it, and the paper's model has the release's groups
    (53 convs without biases, 53 BatchNorms, 5 RNL blocks, the classifier)."""
    from rnl_keras.training.loop import Trainer
    from tests.models.torchvision_reference import random_state_dict

    state = random_state_dict(np.random.default_rng(0))
    weights = tmp_path / "resnet50_torchvision.npz"
    np.savez(weights, **state)
    clips = np.random.default_rng(1).normal(size=(2, 1, 32, 32, 3)).astype(np.float32)

    def train_fn(ctx, seed, batch):
        return tf.data.Dataset.from_tensor_slices((clips, np.array([0, 1], np.int32))) \
            .batch(batch).repeat()

    cfg = TrainConfig(
        train_list="unused", num_classes=3, model_dir=str(tmp_path / "run"), num_frames=1,
        image_size=32, resize_shorter=32, recipe="k400_paper", resnet_variant="torchvision",
        pretrained_weights=str(weights), param_groups="release", epochs=1, steps_per_epoch=1,
        batch_size=2, lr=1e-5, lr_schedule="constant", checkpoint_every_steps=0, progress=False)
    cfg.check()
    trainer = Trainer(cfg, num_train=2, train_dataset_fn=train_fn, out=io.StringIO())
    trainer.run()
    summary = read_summary(cfg.runtime.model_dir)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert summary["start"]["start"] == "torchvision"
    assert summary["start"]["path"] == str(weights) and summary["start"]["sha256"] == digest
    counts = {g["group"]: g["variables"] for g in summary["param_groups"]["groups"]}
    assert counts == {"first_conv_weight": 1, "normal_weight": 52, "bn": 106,
                      "nl_weight": 5 * 3, "nl_bias": 5 * 4, "lr5_weight": 1, "lr10_bias": 1}
    kernel = trainer.model.get_layer("conv1_conv").kernel.numpy()   # one step of lr 1e-5 later
    np.testing.assert_allclose(kernel, state["conv1.weight"].transpose(2, 3, 1, 0), atol=1e-3)
