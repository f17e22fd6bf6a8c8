"""NonLocal (embedded Gaussian, Wang et al.) against a float64 NumPy implementation of eq. (1)."""
import numpy as np
import pytest

from rnl_keras.layers import NonLocal
from tests.layers import numpy_reference as ref
from tests.layers.helpers import nl_weights

SHAPE = (2, 4, 6, 8, 16)


@pytest.mark.parametrize("subsample", [False, True])
@pytest.mark.parametrize("chunk", [None, 40])
def test_matches_numpy(subsample, chunk, rng):
    x = rng.normal(0, 1, SHAPE).astype("float32")
    layer = NonLocal(subsample=subsample, query_chunk_size=chunk)
    layer.build(x.shape)
    expected, attention = ref.nl_block(x, nl_weights(layer, rng), subsample=subsample)
    out = np.asarray(layer(x, training=False))
    assert np.abs((out - x) - (expected - x)).max() / np.abs(expected - x).max() < 1e-5
    got = np.asarray(layer.attention_weights(x, [5, 100]))
    np.testing.assert_allclose(got, attention[:, [5, 100]], rtol=1e-4, atol=1e-7)


def test_fresh_block_is_identity(rng):
    x = rng.normal(0, 1, SHAPE).astype("float32")
    np.testing.assert_array_equal(np.asarray(NonLocal()(x, training=False)), x)


def test_parameter_count_matches_table_iii_block():
    """4 1x1x1 convs C x C/2 (+ biases) and BN: 0.527M at res3 (C = 512)."""
    layer = NonLocal()
    layer.build((1, 8, 28, 28, 512))
    count = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    assert count == 4 * 512 * 256 + 3 * 256 + 512 + 2 * 512


def test_chunked_training_recomputes_the_same_gradients(rng):
    """query_chunk_size in training: the recomputing backward equals plain autodiff."""
    import tensorflow as tf

    x = tf.constant(rng.normal(0, 1, (2, 4, 6, 8, 16)).astype("float32"))
    r = rng.normal(0, 1, x.shape).astype("float32")
    grads = []
    for chunk in (None, 40):
        layer = NonLocal(query_chunk_size=chunk)
        layer.build(x.shape)
        if chunk is None:
            nl_weights(layer, rng)
            weights = layer.get_weights()
        else:
            layer.set_weights(weights)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * r)
        grads.append([np.asarray(g) for g in tape.gradient(loss, [x] + layer.trainable_weights)])
    # phi's bias (a constant per softmax row), g's and W's biases (a constant per channel before a
    # training-mode BN) have a gradient of exactly 0: both sides must be float32 noise there.
    scale = max(np.abs(a).max() for a in grads[0])
    for name, a, b in zip(["x"] + [w.path for w in layer.trainable_weights], *grads):
        if name.endswith(("phi/bias", "g/bias", "w/bias")):
            assert max(np.abs(a).max(), np.abs(b).max()) <= 1e-3 * scale, name
        else:
            assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max(), name
