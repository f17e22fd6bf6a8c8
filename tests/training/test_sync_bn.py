"""--sync_bn: under MirroredStrategy the BatchNorms see the GLOBAL batch (as the release's
SyncBatchNorm), so 2 replicas x 2 clips equal one device with 4 clips; without it each replica
normalises its own 2 clips, and the losses differ (tests/training/test_distributed.py: that run
equals one device accumulating 2-clip micro-batches), so a no-op flag fails this test.
Both runs use --param_groups=release: GroupedSGD updates the mirrored variables as one device.
The weights after the step agree only if EVERY BatchNorm is synchronised (the RNL blocks' too, as
the release's convert_sync_batchnorm does): their gamma / beta gradients depend on the statistics."""
import os

import numpy as np

from tests.training.helpers import TINY, data_flags, read_summary, start_train


def _args(data, model_dir, extra):
    return data_flags(data, val=False) + TINY + [
        f"--model_dir={model_dir}", "--batch_size=4", "--steps_per_epoch=1", "--epochs=1",
        "--dropout=0", "--checkpoint_every_steps=0", "--seed=3", "--lr=0.001",
        "--param_groups=release", *extra]


def test_sync_bn_mirrored_equals_one_device_with_the_global_batch(tiny_data, tmp_path):
    runs = {"one": ["--strategy=default"],
            "sync": ["--strategy=mirrored", "--cpu_devices=2", "--sync_bn"]}
    procs = {name: start_train(_args(tiny_data, tmp_path / name, extra),
                               log_path=str(tmp_path / f"{name}.log"))
             for name, extra in runs.items()}
    for name, proc in procs.items():
        assert proc.wait(timeout=600) == 0, open(tmp_path / f"{name}.log").read()[-3000:]
    loss = {name: read_summary(str(tmp_path / name))["first_losses"] for name in runs}
    assert read_summary(str(tmp_path / "sync"))["replicas"] == 2
    np.testing.assert_allclose(loss["sync"], loss["one"], rtol=1e-5)
    import keras
    import rnl_keras.layers  # noqa: F401  (registers the custom layers)
    one, sync = (keras.saving.load_model(os.path.join(tmp_path, name, "final.keras"),
                                         compile=False) for name in ("one", "sync"))
    for a, b in zip(one.trainable_weights, sync.trainable_weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-7, err_msg=a.path)
