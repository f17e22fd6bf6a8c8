"""One custom loop for every strategy: mirrored == one device, two workers end identical."""
import json
import os

import numpy as np

from tests.training.helpers import TINY, data_flags, free_ports, read_summary, run_train, start_train


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
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(start_train(
            _common(tiny_data, model_dir, steps=2) + [
                "--strategy=multi_worker", f"--val_list={tiny_data['val_list']}",
                "--val_batch_size=4"],
            extra_env={"TF_CONFIG": tf_config}, log_path=str(tmp_path / f"worker{i}.log")))
    try:
        for i, p in enumerate(procs):
            assert p.wait(timeout=600) == 0, open(tmp_path / f"worker{i}.log").read()[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for key in ("weights_sha256", "optimizer_sha256"):
        digests = []
        for i in range(2):
            lines = [ln for ln in open(tmp_path / f"worker{i}.log") if ln.startswith(key + "=")]
            assert lines, open(tmp_path / f"worker{i}.log").read()[-3000:]
            digests.append(lines[-1].strip().split("=", 1)[1])
        assert digests[0] == digests[1], f"the two workers ended with different {key}"
        if key == "weights_sha256":
            weights_digest = digests[0]
    summary = read_summary(model_dir)   # only the chief (worker 0) writes model_dir
    assert summary["workers"] == 2 and summary["replicas"] == 2
    assert summary["global_steps"] == 2 and summary["weights_sha256"] == weights_digest
    # Validation was split over the workers and summed: all 8 videos counted once.
    assert summary["history"][-1]["val_videos"] == 8
    assert os.path.isfile(os.path.join(model_dir, "final.keras"))
