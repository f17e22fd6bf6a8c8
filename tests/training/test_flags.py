"""Bad flags are refused before any work, with a message naming the flag."""
import os
import subprocess
import sys

import pytest
from absl import app, flags

from rnl_keras.training import flags as train_flags
from rnl_keras.training.config import ConfigError
from rnl_keras.training.loop import check_data

from tests.training.helpers import REPO, TRAIN, data_flags, env

CONFIGS = os.path.join(REPO, "configs")


def _config(argv):
    """Parse ``argv`` into the training flags and build the config (as train.py does)."""
    fv = flags.FLAGS
    fv.unparse_flags()
    fv(["train.py", *argv])
    try:
        return train_flags.config_from_flags(fv)
    finally:
        fv.unparse_flags()


def _refused(argv, flag, replicas=1):
    with pytest.raises((app.UsageError, ConfigError)) as info:
        cfg = _config(argv)
        check_data(cfg)
        cfg.check_replicas(replicas)
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
        assert cfg.num_classes == 174 and not cfg.flip and cfg.frame_template == "{:05d}.jpg"
    if name.startswith("k400"):
        assert cfg.num_classes == 400 and cfg.data_source == "video"
    if name.endswith("paper"):
        assert (cfg.lr, cfg.lr_schedule, cfg.lr_decay_epochs, cfg.epochs, cfg.batch_size,
                cfg.momentum, cfg.dropout, cfg.num_frames, cfg.image_size) == \
            (0.01, "step", 20, 50, 64, 0.9, 0.5, 8, 224)
    if name.endswith("released"):
        assert cfg.lr == 0.02 and cfg.lr_schedule == "cosine" and cfg.warmup_epochs > 0


@pytest.mark.parametrize("attention", ["rnl", "nl"])
def test_block_flags_reach_the_model(tiny_data, tmp_path, attention):
    """--rnl_* / --key_subsample / --query_chunk_size configure the blocks the trainer builds."""
    from rnl_keras.layers import NonLocal, RegionNonLocal
    from rnl_keras.models import tsm_resnet50

    cfg = _config(data_flags(tiny_data) + [
        f"--model_dir={tmp_path}/m", f"--attention={attention}", "--rnl_similarity=cosine",
        "--rnl_aggregation=max", "--key_subsample", "--query_chunk_size=96",
        "--nornl_fixed_offsets"])
    model = tsm_resnet50(cfg.num_classes, num_frames=4, attention=cfg.attention, image_size=32,
                         stage_blocks=(1, 1, 1, 1), base_width=8, placement=(("res3", 0),),
                         **cfg.block_kwargs())
    blocks = [layer for layer in model.layers if isinstance(layer, (RegionNonLocal, NonLocal))]
    assert len(blocks) == 1
    block = blocks[0]
    assert block.query_chunk_size == 96
    if attention == "rnl":
        assert (block.similarity, block.aggregation, block.key_subsample) == ("cosine", "max", True)
        assert block.fixed_offsets is False
    else:
        assert block.subsample


def test_block_choices_are_the_layers_own():
    """The trainer's (Keras-free) copies of the RNL choices are exactly the layers' tuples."""
    from rnl_keras.layers.attention_ops import SIMILARITIES
    from rnl_keras.layers.region_nonlocal import AGGREGATIONS
    from rnl_keras.models.tsm_resnet import ATTENTIONS as MODEL_ATTENTIONS
    from rnl_keras.training import config

    assert config.RNL_SIMILARITIES == SIMILARITIES
    assert config.RNL_AGGREGATIONS == AGGREGATIONS
    assert config.ATTENTIONS == MODEL_ATTENTIONS
