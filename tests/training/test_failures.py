"""Every error ends pipelines/train.py promptly, non-zero, with one line naming the cause.

With video input the process used to print the traceback and then hang for ever at 0 % CPU (the
PyAV decoding inside tf.data blocked the interpreter's shutdown); the timeouts below catch that.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from rnl_keras.training import model_dir as mdir
from rnl_keras.training.checkpointing import read_counters
from rnl_keras.training.config import ConfigError
from rnl_keras.training.failures import describe

from tests.training.helpers import TINY, data_flags, env, run_train, start_train

TRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "pipelines", "train.py")
PROMPT_S = 240   # a run that fails must be over well within this (the hang was for ever)


def _last_line(out):
    return [ln for ln in out.strip().splitlines() if ln.strip()][-1]


def _args(data, model_dir, steps=4, epochs=1, extra=()):
    return data_flags(data, val=False) + TINY + [
        f"--model_dir={model_dir}", "--batch_size=2", f"--steps_per_epoch={steps}",
        f"--epochs={epochs}", "--checkpoint_every_steps=0", *extra]


@pytest.fixture()
def broken_clip_data(tiny_data, tmp_path):
    """A copy of the tiny dataset whose 4th training clip is cut to its first 2000 bytes."""
    root = str(tmp_path / "data")
    shutil.copytree(tiny_data["root"], root)
    data = dict(tiny_data, root=root, train_list=os.path.join(root, "train.txt"),
                val_list=os.path.join(root, "val.txt"),
                classes_file=os.path.join(root, "classes.txt"))
    with open(data["train_list"]) as f:
        rel = f.read().splitlines()[3].split()[0]
    path = os.path.join(root, rel)
    with open(path, "rb") as f:
        head = f.read(2000)
    with open(path, "wb") as f:
        f.write(head)
    data["broken"] = rel
    return data


def test_broken_clip_with_raise_exits_naming_the_clip(broken_clip_data, tmp_path):
    code, out = run_train(_args(broken_clip_data, str(tmp_path / "run"), steps=8,
                                extra=["--on_bad_sample=raise"]), timeout=PROMPT_S)
    last = _last_line(out)
    assert code == 1, out[-3000:]
    assert "FAILED" in last and os.path.basename(broken_clip_data["broken"]) in last, last
    assert re.search(r"epoch 1 step \d+", last), last


def test_nan_loss_exits_naming_the_step(tiny_data, tmp_path):
    """A learning rate of 1e30 makes the second step's loss NaN (a real divergence)."""
    code, out = run_train(_args(tiny_data, str(tmp_path / "run"), extra=["--lr=1e30"]),
                          timeout=PROMPT_S)
    last = _last_line(out)
    assert code == 1, out[-3000:]
    assert re.search(r"FAILED .*loss is (nan|inf|-inf) at epoch 1 step \d+", last), last


def test_sigint_saves_a_checkpoint_and_exits_130(tiny_data, tmp_path):
    model_dir = str(tmp_path / "run")
    log = str(tmp_path / "run.log")
    proc = start_train(_args(tiny_data, model_dir, steps=8, epochs=500), log_path=log)
    try:
        deadline = time.time() + PROMPT_S
        while time.time() < deadline and proc.poll() is None:
            if os.path.isfile(os.path.join(model_dir, "config.json")):   # training began
                break
            time.sleep(0.2)
        assert proc.poll() is None, open(log).read()[-3000:]
        time.sleep(2)
        sent = time.time()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
        took = time.time() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = open(log).read()
    assert code == 130, out[-3000:]
    assert took < 60, took
    last = _last_line(out)
    assert "SIGINT" in last and "checkpoint saved" in last, last
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "ckpt"))
    assert latest, out[-3000:]
    counters = read_counters(latest)
    assert counters["optimizer_iterations"] >= 1
    # A consistent state: the counters agree with the optimizer's step count.
    assert counters["epoch"] * 8 + counters["step_in_epoch"] == counters["optimizer_iterations"]


@pytest.mark.parametrize("case", ["file", "parent_is_file", "ckpt_is_file"])
def test_bad_model_dir_is_refused_before_any_work(tiny_data, tmp_path, case):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    model_dir = {"file": blocker, "parent_is_file": blocker / "run",
                 "ckpt_is_file": tmp_path / "run"}[case]
    if case == "ckpt_is_file":
        model_dir.mkdir()
        (model_dir / "ckpt").write_text("x")
    proc = subprocess.run([sys.executable, TRAIN, *_args(tiny_data, str(model_dir))],
                          env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=PROMPT_S)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "--model_dir" in proc.stdout and str(model_dir) in proc.stdout, proc.stdout[-3000:]
    assert "Training " not in proc.stdout and "Traceback" not in proc.stdout
    assert blocker.read_text() == "not a directory"


def test_check_model_dir_accepts_a_new_directory_and_leaves_nothing(tmp_path):
    mdir.check_model_dir(str(tmp_path / "a" / "b"))
    assert not os.listdir(tmp_path)   # not created, and the write probe is gone
    target = tmp_path / "m"
    target.mkdir()
    mdir.check_model_dir(str(target))
    assert not os.listdir(target)
    (target / "tb").write_text("x")
    with pytest.raises(ConfigError, match=r"^--model_dir: .*tb exists and is not a directory"):
        mdir.check_model_dir(str(target))


def test_stale_worker_dirs_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f"rnl_keras_{dead.pid}_worker_1"
        (stale / "ckpt").mkdir(parents=True)
        (stale / "ckpt" / "ckpt-1.index").write_text("x")
        live = tmp_path / f"rnl_keras_{alive.pid}_worker_2"
        live.mkdir()
        other = tmp_path / "rnl_keras_notes"
        other.mkdir()
        removed = mdir.clean_stale_worker_dirs(str(tmp_path))
    finally:
        alive.kill()
        alive.wait()
    assert removed == [str(stale)] and not stale.exists()
    assert live.exists() and other.exists()


def test_stale_tmp_files_in_model_dir_are_removed(tmp_path):
    (tmp_path / ".tmp_abc123.keras").write_text("half a model")
    (tmp_path / "best.keras").write_text("a model")
    mdir.clean_stale(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["best.keras"]


def test_describe_finds_the_clip_inside_a_tensorflow_error():
    inner = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
             "rnl_keras.data.errors.BadSampleError: bad sample /d/clip.mp4: cannot open\n\n"
             "\t [[{{node EagerPyFunc}}]] [Op:IteratorGetNext]")
    err = tf.errors.InvalidArgumentError(None, None, inner)
    assert describe(err) == "BadSampleError: bad sample /d/clip.mp4: cannot open"
    assert describe(ValueError("first\nsecond")) == "ValueError: first"
