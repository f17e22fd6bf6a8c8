"""Bad flags are refused before any work, with a message naming the flag."""
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import app, flags

from rnl_keras.training import flags as train_flags
from rnl_keras.training.config import ConfigError
from rnl_keras.training.inputs import check_data

from tests.training.helpers import REPO, TRAIN, data_flags, env

CONFIGS = os.path.join(REPO, "configs")


def _config(argv, check_files=False):
    """Parse ``argv`` into the training flags and build the config (as train.py does; the
    recipes' weights files are placeholders, so their existence is not checked by default)."""
    fv = flags.FLAGS
    fv.unparse_flags()
    fv(["train.py", *argv])
    try:
        return train_flags.config_from_flags(fv, check_files=check_files)
    finally:
        fv.unparse_flags()


def _refused(argv, flag, replicas=1):
    with pytest.raises((app.UsageError, ConfigError)) as info:
        cfg = _config(argv)
        check_data(cfg)
        cfg.optim.check_replicas(replicas)
    assert f"--{flag}" in str(info.value), str(info.value)
    return str(info.value)


def test_missing_list_file(tmp_path):
    msg = _refused([f"--train_list={tmp_path}/nope.txt", "--num_classes=8",
                    f"--model_dir={tmp_path}/m"], "train_list")
    assert "nope.txt" in msg


def test_num_classes_smaller_than_labels(tiny_data, tmp_path):
    flags_ = [f for f in data_flags(tiny_data) if not f.startswith(("--num_classes",
                                                                   "--classes_file"))]
    msg = _refused(flags_ + ["--num_classes=5", f"--model_dir={tmp_path}/m"], "train_list")
    assert "num_classes" in msg
    # Every bad line is listed at once (labels 5, 6, 7 appear twice each in 16 train clips).
    assert msg.count("outside") == 6, msg


def test_num_classes_differs_from_classes_file(tiny_data, tmp_path):
    flags_ = [f for f in data_flags(tiny_data) if not f.startswith("--num_classes")]
    _refused(flags_ + ["--num_classes=10", f"--model_dir={tmp_path}/m"], "num_classes")


def test_batch_not_divisible_by_replicas(tiny_data, tmp_path):
    _refused(data_flags(tiny_data) + ["--batch_size=3", f"--model_dir={tmp_path}/m"],
             "batch_size", replicas=2)
    _refused(data_flags(tiny_data) + ["--batch_size=6", "--grad_accum_steps=4",
                                      f"--model_dir={tmp_path}/m"], "batch_size")


@pytest.mark.parametrize("bad,flag", [("--attention=transformer", "attention"),
                                      ("--epochs=0", "epochs"), ("--lr=-0.1", "lr"),
                                      ("--lr=0", "lr"), ("--dropout=1.5", "dropout"),
                                      ("--resize_shorter=16", "resize_shorter"),
                                      ("--query_chunk_size=-1", "query_chunk_size")])
def test_out_of_range(tiny_data, tmp_path, bad, flag):
    _refused(data_flags(tiny_data) + [bad, f"--model_dir={tmp_path}/m"], flag)


def test_cli_refuses_before_any_work(tiny_data, tmp_path):
    """The command line exits non-zero, names the flag, and writes nothing to model_dir."""
    model_dir = tmp_path / "m"
    proc = subprocess.run([sys.executable, TRAIN, *data_flags(tiny_data), "--num_classes=3",
                           f"--model_dir={model_dir}"], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "--num_classes" in proc.stderr + proc.stdout
    assert not model_dir.exists()
    proc = subprocess.run([sys.executable, TRAIN, "--attention=foo", "--num_classes=3",
                           f"--train_list={tiny_data['train_list']}", f"--model_dir={model_dir}"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "--attention" in proc.stderr + proc.stdout


@pytest.mark.parametrize("name", ["k400_paper", "ssv1_paper", "k400_released", "ssv1_released",
                                  "demo"])
def test_flagfiles_parse(name):
    """Every recipe parses and passes the static checks (its list files are placeholders)."""
    cfg = _config([f"--flagfile={os.path.join(CONFIGS, name + '.flags')}"])
    if name.startswith("ssv1"):
        assert cfg.data.num_classes == 174 and not cfg.data.flip
        assert cfg.data.frame_template == "{:05d}.jpg"
    if name.startswith("k400"):
        assert cfg.data.num_classes == 400 and cfg.data.data_source == "video"
    if name.endswith("paper"):
        o = cfg.optim
        assert (o.lr, o.lr_schedule, o.lr_decay_epochs, o.epochs, o.batch_size,
                o.momentum, cfg.model.dropout, cfg.data.num_frames, cfg.data.image_size) == \
            (0.01, "step", 20, 50, 64, 0.9, 0.5, 8, 224)
    if name.endswith("released"):
        o, m = cfg.optim, cfg.model
        assert o.lr == 0.02 and o.lr_schedule == "cosine" and o.warmup_epochs > 0
        assert m.sync_bn and m.channel_gate and m.gate_bn_momentum == 0.99
    assert cfg.model.recipe == name
    if name == "demo":
        assert cfg.model.weights_arg() is None     # explicitly random: a small backbone
    else:   # the ImageNet start of the paper and the release: torchvision's ResNet-50
        assert cfg.model.resnet_variant == "torchvision"
        assert cfg.model.pretrained_weights.endswith("resnet50-0676ba61.pth")
        assert cfg.optim.param_groups == "release"
        assert dict(cfg.model.rnl_kernel_sizes) == {"res3": (3, 7, 7), "res4": (3, 3, 3)}


SMALL = ["--train_list=x.txt", "--num_classes=5", "--model_dir=m", "--num_frames=2",
         "--image_size=32", "--resize_shorter=32", "--stage_blocks=1,1,1,1", "--base_width=8"]


def _small_model(argv):
    """The model the trainer builds from ``argv`` (a small backbone)."""
    from rnl_keras.models import tsm_resnet50

    cfg = _config(SMALL + argv)
    return cfg, tsm_resnet50(cfg.data.num_classes, **cfg.model_kwargs())


@pytest.mark.parametrize("attention", ["rnl", "nl"])
def test_block_flags_reach_the_model(attention):
    """--rnl_* / --key_subsample / --nl_subsample / --query_chunk_size configure the blocks the
    trainer builds; RNL's key sub-sampling and NL's sub-sampling are separate flags."""
    from rnl_keras.layers import NonLocal, RegionNonLocal

    common = [f"--attention={attention}", "--placement=res3:0", "--rnl_similarity=cosine",
              "--rnl_aggregation=max", "--query_chunk_size=96"]
    for sub_flags, rnl_sub, nl_sub in ((["--key_subsample"], True, False),
                                       (["--nl_subsample"], False, True)):
        _, model = _small_model(common + sub_flags)
        blocks = [layer for layer in model.layers if isinstance(layer, (RegionNonLocal, NonLocal))]
        assert len(blocks) == 1
        block = blocks[0]
        assert block.query_chunk_size == 96
        if attention == "rnl":
            assert (block.similarity, block.aggregation) == ("cosine", "max")
            assert block.key_subsample is rnl_sub
        else:
            assert block.subsample is nl_sub


def test_region_sizes_se_reduction_gate_and_sync_bn_reach_the_model():
    """--rnl_kernel_sizes per stage (1x1x1: Table II(a)'s first row), --se_reduction (eq. (11)'s
    C/2 vs Table III's 16), the channel gate's BN momentum and --sync_bn."""
    from rnl_keras.layers import ChannelGate, RegionNonLocal, SEChain

    _, model = _small_model(["--attention=rnl", "--placement=res3:0,res4:0",
                             "--rnl_kernel_sizes=res3:1x1x1", "--channel_gate", "--sync_bn"])
    rnl = {layer.name: layer for layer in model.layers if isinstance(layer, RegionNonLocal)}
    assert rnl["conv3_block1_rnl"].kernel_size == (1, 1, 1)
    assert tuple(rnl["conv3_block1_rnl"].f_theta_kernel.shape[:3]) == (1, 1, 1)
    assert rnl["conv4_block1_rnl"].kernel_size == (3, 3, 3)          # the paper's default
    gate = [layer for layer in model.layers if isinstance(layer, ChannelGate)]
    assert len(gate) == 1 and gate[0].bn_momentum == 0.99            # the release's
    assert model.get_layer("conv1_bn").synchronized
    cfg, model = _small_model(["--attention=se+rnl", "--placement=res3:0", "--se_reduction=2",
                               "--rnl_kernel_sizes=res3:3x5x5", "--gate_bn_momentum=0.9",
                               "--channel_gate"])
    chain = [layer for layer in model.layers if isinstance(layer, SEChain)][0]
    channels = 4 * 8 * 2                                             # res3: 4 x base_width x 2
    assert tuple(chain.channel.w1.kernel.shape) == (channels, channels // 2)
    assert chain.rnl.kernel_size == (3, 5, 5)
    assert [layer for layer in model.layers if isinstance(layer, ChannelGate)][0].bn_momentum \
        == 0.9
    assert not model.get_layer("conv1_bn").synchronized
    assert cfg.model_kwargs()["sync_bn"] is False
    # --classifier_init: the release's N(0, 0.001) by default, glorot for from-scratch runs
    assert np.std(model.get_layer("fc").kernel.numpy()) < 0.002
    _, model = _small_model(["--attention=none", "--classifier_init=glorot"])
    assert np.std(model.get_layer("fc").kernel.numpy()) > 0.02


@pytest.mark.parametrize("bad,flag", [
    ("--rnl_kernel_sizes=res3:2x7x7", "rnl_kernel_sizes"),      # even
    ("--rnl_kernel_sizes=res3:0x1x1", "rnl_kernel_sizes"),      # not positive
    ("--rnl_kernel_sizes=res3:3x7", "rnl_kernel_sizes"),        # two numbers
    ("--rnl_kernel_sizes=res3:axbxc", "rnl_kernel_sizes"),
    ("--rnl_kernel_sizes=res9:3x3x3", "rnl_kernel_sizes"),      # unknown stage
    ("--rnl_kernel_sizes=3x3x3", "rnl_kernel_sizes"),           # no stage
    ("--rnl_kernel_sizes=res3:3x7x7,res3:1x1x1", "rnl_kernel_sizes"),   # twice
    ("--rnl_kernel_sizes=res5:3x3x3", "rnl_kernel_sizes"),      # no RNL block in res5
    ("--se_reduction=0", "se_reduction"), ("--gate_bn_momentum=1.0", "gate_bn_momentum"),
    ("--fold_div=0", "fold_div"),
    ("--pretrained_weights=w.pth", "resnet_variant"),           # torchvision file, keras model
    ("--pretrained_weights=w.h5 --resnet_variant=torchvision", "resnet_variant"),
])
def test_model_flags_refused(bad, flag):
    """Bad ablation flags are refused at parse time with a message naming the flag."""
    with pytest.raises(app.UsageError) as info:
        _config(["--train_list=x.txt", "--num_classes=5", "--model_dir=m", *bad.split()])
    assert f"--{flag}" in str(info.value), str(info.value)


def test_release_groups_need_sgd():
    with pytest.raises(app.UsageError, match="--param_groups"):
        _config(["--train_list=x.txt", "--num_classes=5", "--model_dir=m",
                 "--param_groups=release", "--optimizer=adam"])
    assert _config(["--train_list=x.txt", "--num_classes=5", "--model_dir=m",
                    "--param_groups=release"]).optim.param_groups == "release"


def test_block_choices_are_the_layers_own():
    """The trainer's (Keras-free) copies of the RNL choices are exactly the layers' tuples."""
    from rnl_keras.layers.attention import SIMILARITIES
    from rnl_keras.layers.region_nonlocal import AGGREGATIONS
    from rnl_keras.models.tsm_resnet import ATTENTIONS as MODEL_ATTENTIONS
    from rnl_keras.training import config

    from rnl_keras.models.tsm_resnet import STAGE_NAMES, VARIANTS

    assert config.RNL_SIMILARITIES == SIMILARITIES
    assert config.RNL_AGGREGATIONS == AGGREGATIONS
    assert config.ATTENTIONS == MODEL_ATTENTIONS
    assert config.STAGES == tuple(stage for stage, _, _ in STAGE_NAMES)
    assert config.RESNET_VARIANTS == VARIANTS


def test_profile_shares_the_model_flags():
    """pipelines/profile.py defines the trainer's model flags (same names, help and choices)."""
    from pipelines import profile
    from rnl_keras.training.model_flags import MODEL_FLAGS

    for name in MODEL_FLAGS:
        ours, theirs = flags.FLAGS[name], profile.FLAGS[name]
        assert ours.help == theirs.help, name
        if name != "resnet_variant":   # profile counts the paper's backbone by default
            assert ours.default == theirs.default, name
