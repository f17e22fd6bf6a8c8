"""The nested configuration (data / model / optim / runtime) and the watchdog's lazy message."""
import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest
from absl import flags

from rnl_keras.training.config import SECTIONS, TrainConfig

from tests.training.helpers import REPO, env
from tests.training.test_flags import _config

# The flat field names of config.json (a file format: the same 75 keys as before the sections).
CONFIG_JSON_KEYS = {
    "attention", "base_width", "batch_size", "channel_gate", "checkpoint_every_steps",
    "classes_file", "classifier_init", "clip_grad_norm", "cpu_devices", "data_root",
    "data_service", "data_service_timeout_s", "data_source", "dense_stride",
    "deterministic_data", "dropout", "epochs", "flip", "fold_div", "frame_template",
    "gate_bn_momentum", "grad_accum_steps", "image_size", "jit_compile", "keep_checkpoints",
    "key_subsample", "label_smoothing", "log_every_steps", "lr", "lr_decay_epochs",
    "lr_decay_factor", "lr_schedule", "mixed_precision", "model_dir", "momentum", "nesterov",
    "nl_subsample", "num_classes", "num_frames", "num_parallel_calls", "on_bad_sample",
    "optimizer", "param_groups", "peer_timeout_s", "placement", "pretrained_weights", "progress",
    "query_chunk_size", "recipe", "reference_batch_size", "resize_shorter", "resnet_variant",
    "rnl_aggregation", "rnl_kernel_sizes", "rnl_similarity", "sampling",
    "scale_lr_with_replicas", "se_reduction", "seed", "shift", "shuffle_buffer", "stage_blocks",
    "steps_per_epoch", "strategy", "sync_bn", "train_list", "trust_pickled_code",
    "val_batch_size", "val_every_epochs", "val_list", "val_max_videos", "val_root",
    "warmup_epochs", "warmup_start_factor", "weight_decay"}
# Flags whose value is parsed or defaulted on the way into the config.
_CONVERTED = {"stage_blocks", "placement", "rnl_kernel_sizes", "val_list", "val_root",
              "pretrained_weights"}


def test_sections_split_every_field_once_and_config_json_stays_flat():
    names = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) == len(CONFIG_JSON_KEYS)
    cfg = TrainConfig(train_list="t.txt", num_classes=3, model_dir="m")
    assert set(cfg.to_dict()) == CONFIG_JSON_KEYS


def test_flat_keywords_are_routed_to_their_sections():
    cfg = TrainConfig(train_list="t.txt", num_classes=3, model_dir="m", lr=0.5, attention="nl",
                      seed=4, val_max_videos=7, data_service_timeout_s=9.0)
    assert (cfg.optim.lr, cfg.model.attention, cfg.runtime.seed) == (0.5, "nl", 4)
    assert (cfg.data.val_max_videos, cfg.data.data_service_timeout_s) == (7, 9.0)
    assert cfg.data.train_list == "t.txt" and cfg.runtime.model_dir == "m"
    assert cfg.model_kwargs()["num_frames"] == cfg.data.num_frames
    with pytest.raises(TypeError, match="learning_rate"):
        TrainConfig(train_list="t.txt", num_classes=3, model_dir="m", learning_rate=0.1)
    with pytest.raises(TypeError, match="optim"):
        TrainConfig(data=cfg.data, model=cfg.model, optim=cfg.optim, runtime=cfg.runtime, lr=1.0)


@pytest.mark.parametrize("recipe", ["k400_released", "ssv1_paper", "demo"])
def test_every_field_is_read_from_the_flag_of_its_name(recipe):
    """The recipes set many non-default values: each reaches the field named as its flag."""
    cfg = _config([f"--flagfile={os.path.join(REPO, 'configs', recipe + '.flags')}",
                   "--val_max_videos=3", "--data_service_timeout_s=12", "--seed=5"])
    fv = flags.FLAGS
    fv([sys.argv[0], f"--flagfile={os.path.join(REPO, 'configs', recipe + '.flags')}",
        "--val_max_videos=3", "--data_service_timeout_s=12", "--seed=5"])
    try:
        values = cfg.to_dict()
        for name in CONFIG_JSON_KEYS - _CONVERTED:
            assert values[name] == fv[name].value, name
        assert values["stage_blocks"] == tuple(int(b) for b in fv["stage_blocks"].value)
    finally:
        fv.unparse_flags()
    assert (cfg.data.val_max_videos, cfg.data.data_service_timeout_s, cfg.runtime.seed) == \
        (3, 12.0, 5)


def _run(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60)


def test_deadline_builds_a_callable_message_only_when_it_fires():
    """Deadline.arm(seconds, fn): fn runs once the limit passes (e.g. asking the tf.data service
    which worker was lost), never for a disarmed deadline."""
    proc = _run("""
        import time
        from rnl_keras.training.failures import Deadline
        calls = []
        d = Deadline(prog="t.py")
        d.arm(0.2, lambda: calls.append("early") or "never shown")
        d.disarm()
        time.sleep(0.5)
        print("calls after disarm:", calls, flush=True)
        d.arm(0.3, lambda: f"built at fire time, calls={calls}")
        time.sleep(30)
    """)
    assert proc.returncode == 1, proc.stdout
    assert "calls after disarm: []" in proc.stdout
    assert "t.py: FAILED: no progress for 0 s built at fire time, calls=[]" in proc.stdout


def test_deadline_still_ends_the_process_when_the_message_fails():
    proc = _run("""
        import time
        from rnl_keras.training.failures import Deadline
        Deadline(prog="t.py").arm(0.2, lambda: 1 / 0)
        time.sleep(30)
    """)
    assert proc.returncode == 1, proc.stdout
    assert "the message could not be built: ZeroDivisionError" in proc.stdout


def test_service_stall_message_is_the_service_report_with_the_limit(monkeypatch):
    from rnl_keras.data import service
    from rnl_keras.training.inputs import stall_message

    monkeypatch.setattr(service, "workers_report", lambda found, address: "WORKERS")
    monkeypatch.setattr("rnl_keras.service_workers.survey", lambda address: {"error": "x"})
    text = stall_message("grpc://h:1", 5.0, "epoch 1 step 2")
    assert text == ("while epoch 1 step 2: no batch from the tf.data service grpc://h:1 within "
                    "--data_service_timeout_s=5. WORKERS")
