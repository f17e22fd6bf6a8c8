"""The classifier starts as the release / TSM's (N(0, 0.001), bias 0), drawn independently per
model; ``sync_bn=True`` makes the backbone's BatchNorms synchronized across replicas."""
import keras
import numpy as np

from rnl_keras.models import tsm_resnet50

TINY = dict(num_frames=2, image_size=32, attention="none", stage_blocks=(1, 1, 1, 1),
            base_width=8)


def test_classifier_init_is_normal_0_001():
    model = tsm_resnet50(1000, **TINY)                   # fc kernel (256, 1000): 256k draws
    kernel = model.get_layer("fc").kernel.numpy().astype(np.float64)
    assert abs(kernel.std() - 0.001) < 0.00002           # glorot here would be ~0.041
    assert abs(kernel.mean()) < 0.00001
    # normal, not uniform: excess kurtosis ~0 (uniform: -1.2)
    kurtosis = np.mean((kernel - kernel.mean()) ** 4) / kernel.var() ** 2 - 3
    assert abs(kurtosis) < 0.1
    assert not np.any(model.get_layer("fc").bias.numpy())


def test_glorot_classifier_for_from_scratch_runs():
    """classifier_init="glorot" (the demo's): uniform with bound sqrt(6 / (fan_in + fan_out))."""
    kernel = tsm_resnet50(1000, classifier_init="glorot", **TINY).get_layer("fc").kernel.numpy()
    bound = np.sqrt(6.0 / (kernel.shape[0] + kernel.shape[1]))
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.99 * bound
    assert abs(kernel.std() - bound / np.sqrt(3.0)) < 0.02 * bound


def test_unknown_classifier_init_is_refused():
    import pytest
    with pytest.raises(ValueError, match="classifier_init"):
        tsm_resnet50(10, classifier_init="he", **TINY)


def test_classifier_draws_are_independent_and_seeded():
    keras.utils.set_random_seed(7)
    a = tsm_resnet50(50, **TINY).get_layer("fc").kernel.numpy()
    b = tsm_resnet50(50, **TINY).get_layer("fc").kernel.numpy()
    keras.utils.set_random_seed(7)
    c = tsm_resnet50(50, **TINY).get_layer("fc").kernel.numpy()
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.05
    np.testing.assert_array_equal(a, c)


def test_sync_bn_flag(rng):
    plain = tsm_resnet50(5, dropout=0.0, **TINY)
    synced = tsm_resnet50(5, dropout=0.0, sync_bn=True, **TINY)
    bns = [l for l in synced.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 1 + 4 * 4                      # stem + 3 per block + 1 shortcut each
    assert all(l.synchronized for l in bns)
    assert not any(l.synchronized for l in plain.layers
                   if isinstance(l, keras.layers.BatchNormalization))
    # the blocks' own BatchNorms too (RNL's after W_z, the gate's), as convert_sync_batchnorm
    rnl = tsm_resnet50(5, sync_bn=True, **{**TINY, "attention": "rnl"},
                       placement=(("res3", 0),), channel_gate_at=(("res3", 0),))
    nested = [l for l in rnl._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)
              and l.path.split("/")[0].endswith(("_rnl", "_cg"))]
    assert len(nested) == 2 and all(l.synchronized for l in nested)
    restored = keras.Model.from_config(synced.get_config())
    assert all(l.synchronized for l in restored.layers
               if isinstance(l, keras.layers.BatchNormalization))
    for layer in plain.layers:
        if layer.weights:
            synced.get_layer(layer.name).set_weights(layer.get_weights())
    clip = rng.normal(0, 1, (2, 2, 32, 32, 3)).astype("float32")
    # same batch statistics with one replica (training mode uses them)
    np.testing.assert_allclose(synced(clip, training=True), plain(clip, training=True),
                               rtol=1e-5, atol=1e-6)
