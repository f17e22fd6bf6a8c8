"""One custom loop for every strategy: mirrored == one device, two workers end identical."""
import json
import os
import signal
import time

import numpy as np
import tensorflow as tf

from rnl_keras.training.checkpointing import read_counters

from tests.training.helpers import TINY, data_flags, free_ports, read_summary, start_train


def _common(data, model_dir, steps=2):
    return data_flags(data, val=False) + TINY + [
        f"--model_dir={model_dir}", "--batch_size=4", f"--steps_per_epoch={steps}", "--epochs=1",
        "--dropout=0", "--checkpoint_every_steps=0", "--seed=3", "--lr=0.001"]


def test_mirrored_two_cpu_devices_matches_one_device(tiny_data, tmp_path):
    """Same global batch of 4: 2 replicas x 2 clips vs 1 device with 2 accumulated micro-batches
    of 2 (so BatchNorm sees the same 2-clip groups): same loss, same weights after the update.
    (Later steps drift apart chaotically: BatchNorm over 8 frames of 1x1 res5 maps amplifies
    float summation-order noise, so one step is compared.)"""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    p1 = start_train(_common(tiny_data, one, 1) + ["--strategy=default", "--grad_accum_steps=2"],
                     log_path=str(tmp_path / "one.log"))
    p2 = start_train(_common(tiny_data, two, 1) + ["--strategy=mirrored", "--cpu_devices=2"],
                     log_path=str(tmp_path / "two.log"))
    for p, name in ((p1, "one"), (p2, "two")):
        assert p.wait(timeout=600) == 0, open(tmp_path / f"{name}.log").read()[-3000:]
    s1, s2 = read_summary(one), read_summary(two)
    assert s2["replicas"] == 2 and s1["replicas"] == 1
    assert len(s1["first_losses"]) == 1
    # Same weights, same clips, same BatchNorm groups: the same loss.
    np.testing.assert_allclose(s2["first_losses"], s1["first_losses"], rtol=1e-5)
    # After the update the trainable weights agree (up to float summation order), so the
    # all-reduced, clipped, L2-decayed gradient equals the accumulated one.
    import keras
    import rnl_keras.layers  # noqa: F401  (registers the custom layers)
    m1 = keras.saving.load_model(os.path.join(one, "final.keras"), compile=False)
    m2 = keras.saving.load_model(os.path.join(two, "final.keras"), compile=False)
    for a, b in zip(m1.trainable_weights, m2.trainable_weights):
        a, b = np.asarray(a.numpy()), np.asarray(b.numpy())
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7, err_msg=str(a.shape))
    assert s1["global_steps"] == s2["global_steps"] == 1


def test_multi_worker_two_processes_identical_weights(tiny_data, tmp_path):
    model_dir = str(tmp_path / "mw")
    tmp_dir = tmp_path / "tmp"   # the workers' TMPDIR: worker 1 checkpoints there
    tmp_dir.mkdir()
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(start_train(
            _common(tiny_data, model_dir, steps=2) + [
                "--strategy=multi_worker", f"--val_list={tiny_data['val_list']}",
                "--val_batch_size=4"],
            extra_env={"TF_CONFIG": tf_config, "TMPDIR": str(tmp_dir)},
            log_path=str(tmp_path / f"worker{i}.log")))
    try:
        for i, p in enumerate(procs):
            assert p.wait(timeout=600) == 0, open(tmp_path / f"worker{i}.log").read()[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    summary = read_summary(model_dir)   # only the chief (worker 0) writes model_dir
    # Every worker's digests, gathered by the chief at the end: the two workers are identical.
    for key in ("weights_sha256", "optimizer_sha256"):
        digests = summary[f"workers_{key}"]
        assert len(digests) == 2 and digests[0] == digests[1], (key, digests)
        assert summary[key] == digests[0]
    assert summary["workers"] == 2 and summary["replicas"] == 2
    assert summary["global_steps"] == 2
    # Validation was split over the workers and summed: all 8 videos counted once.
    assert summary["history"][-1]["val_videos"] == 8
    assert os.path.isfile(os.path.join(model_dir, "final.keras"))
    # Worker 1's private checkpoint directory is removed when it ends; no temporaries remain.
    assert not [n for n in os.listdir(tmp_dir) if n.startswith("rnl_keras_")]
    assert not [n for n in os.listdir(model_dir) if n.startswith(".tmp_")]


def _worker_env(cluster, index, tmp_dir):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    return {"TF_CONFIG": tf_config, "TMPDIR": str(tmp_dir)}


def _last_line(path):
    return [ln for ln in open(path).read().strip().splitlines() if ln.strip()][-1]


def _start_two_workers(data, tmp_path, epochs=500):
    """Two long-running workers (16 clips over 2 workers, global batch 4: 4 steps per pass);
    returns (procs, logs, model_dir, tmp_dir, cluster) once worker 0 (the chief) started
    training (it writes config.json then)."""
    model_dir = str(tmp_path / "mw")
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    logs = [str(tmp_path / f"worker{i}.log") for i in range(2)]
    args = _common(data, model_dir, steps=4) + [
        "--strategy=multi_worker", f"--epochs={epochs}", "--peer_timeout_s=120"]
    procs = [start_train(args, extra_env=_worker_env(cluster, i, tmp_dir), log_path=logs[i])
             for i in range(2)]
    deadline = time.time() + 400
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if os.path.isfile(os.path.join(model_dir, "config.json")):
            break
        time.sleep(0.2)
    return procs, logs, model_dir, tmp_dir, cluster


def _end(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_multi_worker_sigterm_saves_and_every_worker_stops(tiny_data, tmp_path):
    """SIGTERM to worker 1 (TensorFlow's preemption handler used to swallow it): both workers
    save the same checkpoint at the end of the step and exit 143 (128 + SIGTERM)."""
    procs, logs, model_dir, tmp_dir, _ = _start_two_workers(tiny_data, tmp_path)
    try:
        assert all(p.poll() is None for p in procs), open(logs[0]).read()[-3000:]
        time.sleep(2)
        sent = time.time()
        procs[1].send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=120) for p in procs]
        took = time.time() - sent
    finally:
        _end(procs)
    assert codes == [143, 143], [open(log).read()[-2000:] for log in logs]
    assert took < 60, took
    assert "SIGTERM received during" in _last_line(logs[1])
    assert "SIGTERM received by another worker" in _last_line(logs[0])
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "ckpt"))
    assert latest and "checkpoint saved: " + latest in _last_line(logs[0])
    counters = read_counters(latest)
    assert counters["optimizer_iterations"] >= 1
    assert counters["epoch"] * 4 + counters["step_in_epoch"] == counters["optimizer_iterations"]
    # The non-chief's private checkpoint directory is gone.
    assert not [n for n in os.listdir(tmp_dir) if n.startswith("rnl_keras_")]


def test_multi_worker_peer_killed_mid_training_ends_the_survivor(tiny_data, tmp_path):
    """kill -9 of worker 1 mid-training: worker 0 stops (non-zero) naming its peer's address."""
    procs, logs, _, _, cluster = _start_two_workers(tiny_data, tmp_path)
    try:
        assert all(p.poll() is None for p in procs), open(logs[0]).read()[-3000:]
        time.sleep(2)
        procs[1].kill()
        code = procs[0].wait(timeout=150)
    finally:
        _end(procs)
    last = _last_line(logs[0])
    assert code == 1, open(logs[0]).read()[-3000:]
    assert "FAILED" in last and f"worker 1 at {cluster['worker'][1]}" in last, last


def test_multi_worker_missing_peer_times_out_naming_it(tiny_data, tmp_path):
    """Only worker 0 of 2 starts: it stops within --peer_timeout_s naming worker 1's address."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    log = str(tmp_path / "worker0.log")
    args = _common(tiny_data, str(tmp_path / "mw"), steps=2) + [
        "--strategy=multi_worker", "--peer_timeout_s=5"]
    proc = start_train(args, extra_env=_worker_env(cluster, 0, tmp_path), log_path=log)
    try:
        code = proc.wait(timeout=120)
    finally:
        _end([proc])
    last = _last_line(log)
    assert code == 1, open(log).read()[-3000:]
    assert f"worker 1 at 127.0.0.1:{ports[1]}" in last and "--peer_timeout_s" in last, last
