"""Training killed with SIGKILL mid-epoch resumes from its checkpoint instead of starting over.

The kill comes in epoch 2, after epoch 1 was completed (and validated): the resumed run keeps
epoch 1's record (summary.json's history and final_val_top1 lost it once), and the leftovers a
killed run leaves (a half-written ``.tmp_*.keras``, a dead worker's temp directory) are removed.
"""
import os
import signal
import subprocess
import sys
import time

import tensorflow as tf

from rnl_keras.training.checkpointing import read_counters

from tests.training.helpers import TINY, data_flags, read_summary, run_train, start_train

STEPS, EPOCHS = 5, 2


def test_kill_and_resume(tiny_data, tmp_path):
    model_dir = str(tmp_path / "run")
    tmp_dir = tmp_path / "tmp"   # TMPDIR of both runs (non-chief worker directories go there)
    tmp_dir.mkdir()
    args = data_flags(tiny_data, val=True) + TINY + [
        f"--model_dir={model_dir}", "--batch_size=2", f"--steps_per_epoch={STEPS}",
        f"--epochs={EPOCHS}", "--checkpoint_every_steps=1", "--keep_checkpoints=2",
        "--val_batch_size=4"]
    proc = start_train(args, log_path=str(tmp_path / "first.log"),
                       extra_env={"TMPDIR": str(tmp_dir)})
    ckpt_dir = os.path.join(model_dir, "ckpt")
    killed_at = None
    deadline = time.time() + 500
    try:
        while time.time() < deadline and proc.poll() is None:
            latest = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
            if latest and int(latest.rsplit("-", 1)[1]) >= STEPS + 1:   # inside epoch 2
                proc.send_signal(signal.SIGKILL)
                killed_at = latest
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait()
    assert killed_at is not None, open(tmp_path / "first.log").read()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(model_dir, "summary.json"))   # it never finished

    latest = tf.train.latest_checkpoint(ckpt_dir)   # may be one step after killed_at
    done = read_counters(latest)
    done_steps = done["optimizer_iterations"]
    assert STEPS + 1 <= done_steps < STEPS * EPOCHS and done["epoch"] == 1
    assert done["epoch"] * STEPS + done["step_in_epoch"] == done_steps
    # What a run killed while saving best.keras leaves, and a killed non-chief worker's directory.
    with open(os.path.join(model_dir, ".tmp_k1ll3d.keras"), "wb") as f:
        f.write(b"PK half a zip")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_dir / f"rnl_keras_{dead.pid}_worker_1" / "ckpt"
    stale.mkdir(parents=True)

    code, out = run_train(args, extra_env={"TMPDIR": str(tmp_dir)})
    assert code == 0, out[-3000:]
    summary = read_summary(model_dir)
    resumed = summary["resumed"]   # where the second run started
    assert resumed and resumed["checkpoint"] == latest, (resumed, latest)
    assert resumed["global_step"] == done_steps
    assert resumed["epoch"] * STEPS + resumed["step_in_epoch"] == done_steps
    assert resumed["momentum_norm"] > 0, "the momentum slots were not restored"
    # It continued: only the missing steps ran, and the totals are those of an unbroken run.
    assert summary["steps_this_run"] == STEPS * EPOCHS - done_steps
    assert summary["global_steps"] == STEPS * EPOCHS
    assert summary["epochs"] == EPOCHS
    final = read_counters(tf.train.latest_checkpoint(ckpt_dir))
    assert final["optimizer_iterations"] == STEPS * EPOCHS and final["epoch"] == EPOCHS
    assert os.path.isfile(os.path.join(model_dir, "final.keras"))
    # Epoch 1's record (written before the kill) is kept, epoch 2's is new; both validated.
    assert [h["epoch"] for h in summary["history"]] == [1, 2], summary["history"]
    assert all("val_top1" in h for h in summary["history"])
    assert summary["final_val_top1"] == summary["history"][-1]["val_top1"]
    assert not [n for n in os.listdir(model_dir) if n.startswith(".tmp_")]
    assert not [n for n in os.listdir(tmp_dir) if n.startswith("rnl_keras_")]
