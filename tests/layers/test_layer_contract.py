"""The contract every layer of rnl_keras.layers keeps (as keras-hub's ``run_layer_test``):

* ``get_config`` round trip: ``from_config(get_config())`` writes the same config back and, with the
  same weights, computes the same output;
* ``.keras`` round trip: a model holding the layer, saved and loaded, computes the same output;
* ``mixed_bfloat16``: float32 variables, bfloat16 output, finite and close to the float32 layer;
* one training step: gradients for the input and every trainable weight, all finite, not all
  zero; an SGD step moves the weights.

Weights are randomised first (the zero-initialised BN gammas and gates would make most blocks the
identity and hide the attention).
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.layers import (ChannelGate, ClipToFrames, FramesToClip, NonLocal, RegionNonLocal,
                              SEChain, SqueezeExcite, TemporalAverage, TemporalShift)

CLIP = (2, 4, 6, 6, 16)       # B, T, H, W, C (N = 144)
FRAMES = (8, 6, 6, 16)        # B * T frames of the same clips
CASES = {
    "rnl-gaussian": (RegionNonLocal, {"kernel_size": 3}, CLIP),
    "rnl-gaussian-chunked": (RegionNonLocal, {"kernel_size": 3, "query_chunk_size": 40}, CLIP),
    "rnl-cosine-subsampled": (RegionNonLocal, {"similarity": "cosine", "aggregation": "max",
                                               "kernel_size": (1, 3, 3), "key_subsample": True,
                                               "query_chunk_size": 16}, CLIP),
    "rnl-dot-avg": (RegionNonLocal, {"similarity": "dot", "aggregation": "avg",
                                     "kernel_size": 3}, CLIP),
    "nl": (NonLocal, {}, CLIP),
    "nl-subsampled-chunked": (NonLocal, {"subsample": True, "query_chunk_size": 50}, CLIP),
    "se-add": (SqueezeExcite, {"reduction": 4}, CLIP),
    "se-scale": (SqueezeExcite, {"reduction": 4, "mode": "scale"}, CLIP),
    "gate": (ChannelGate, {"reduction": 2}, CLIP),
    "se-chain": (SEChain, {"se_reduction": 4, "kernel_size": 3}, CLIP),
    "gate-chain": (SEChain, {"channel_attention": "gate", "kernel_size": 3,
                             "query_chunk_size": 40}, CLIP),
    "shift-frames": (TemporalShift, {"num_segments": 4}, FRAMES),
    "shift-clip": (TemporalShift, {"num_segments": 4, "fold_div": 4}, CLIP),
    "clip-to-frames": (ClipToFrames, {}, CLIP),
    "frames-to-clip": (FramesToClip, {"num_frames": 4}, FRAMES),
    "temporal-average": (TemporalAverage, {"num_frames": 4}, (8, 10)),
}


def make(case, rng, **extra):
    """The layer of ``case``, built, with random trainable weights; and an input for it."""
    cls, kwargs, shape = CASES[case]
    layer = cls(**kwargs, **extra)
    layer.build(shape)
    for weight in layer.trainable_weights:
        weight.assign(rng.normal(0, 0.3, weight.shape).astype("float32"))
    return layer, rng.normal(0, 1, shape).astype("float32")


def assert_same(a, b, tolerance=1e-6):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=0, atol=tolerance * max(np.abs(b).max(), 1.0))


@pytest.mark.parametrize("case", sorted(CASES))
def test_get_config_round_trip(case, rng):
    layer, x = make(case, rng, name="under_test")
    config = layer.get_config()
    clone = CASES[case][0].from_config(config)
    assert clone.get_config() == config
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    assert_same(clone(x, training=False), layer(x, training=False))


@pytest.mark.parametrize("case", sorted(CASES))
def test_keras_file_round_trip(case, rng, tmp_path):
    layer, x = make(case, rng)
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    expected = model(x, training=False)
    path = str(tmp_path / f"{case}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.layers[-1]) is type(layer)
    assert loaded.layers[-1].get_config() == layer.get_config()
    assert_same(loaded(x, training=False), expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_mixed_bfloat16(case, rng):
    full, x = make(case, rng)
    half, _ = make(case, rng, dtype="mixed_bfloat16")
    half.set_weights(full.get_weights())
    assert all(w.dtype == "float32" for w in half.weights)
    out = half(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    out = np.asarray(tf.cast(out, tf.float32))
    assert np.all(np.isfinite(out))
    # bfloat16 keeps 8 bits: a few 2^-8 of the output's scale, through a handful of products.
    assert_same(out, full(x, training=False), tolerance=5e-2)


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_training_step(case, rng):
    layer, x = make(case, rng)
    x = tf.constant(x)
    weights = layer.trainable_weights
    before = [w.numpy().copy() for w in weights]

    def loss_fn():
        y = layer(x, training=True)
        return tf.reduce_mean(tf.square(y - 0.5))

    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = loss_fn()
    grads = tape.gradient(loss, [x] + weights)
    assert np.isfinite(loss.numpy())
    for grad, name in zip(grads, ["input"] + [w.path for w in weights]):
        assert grad is not None, f"{case}: no gradient for {name}"
        assert np.all(np.isfinite(np.asarray(grad))), f"{case}: non-finite gradient for {name}"
    assert any(np.abs(np.asarray(g)).max() > 0 for g in grads)
    if weights:
        keras.optimizers.SGD(0.1).apply(grads[1:], weights)
        assert any(not np.array_equal(w.numpy(), b) for w, b in zip(weights, before))
