"""z = BN(y W_z + b_z) + x (eq. (8)): folded in inference, batch statistics in training."""
import keras
import numpy as np
import pytest

from rnl_keras.layers.residual_projection import project_and_add
from tests.layers import numpy_reference as ref
from tests.layers.helpers import dense_weights, np_, randomise_bn, randomise_dense

X_SHAPE = (2, 3, 4, 5, 6)   # B, T, H, W, C
C_INTER = 4


def _setup(rng):
    dense = keras.layers.Dense(X_SHAPE[-1])
    dense.build((None, C_INTER))
    randomise_dense(dense, rng)
    bn = keras.layers.BatchNormalization(epsilon=1e-5)
    bn.build(X_SHAPE)
    stats = randomise_bn(bn, rng)
    x = rng.normal(0, 1, X_SHAPE).astype("float32")
    y = rng.normal(0, 1, (X_SHAPE[0], int(np.prod(X_SHAPE[1:4])), C_INTER)).astype("float32")
    w = dense_weights(dense, "w")
    conv = ref.dense(y, w["w_kernel"], w["w_bias"]).reshape(X_SHAPE)
    return dense, bn, stats, x, y, conv


@pytest.mark.parametrize("training", [None, False])
def test_inference_folds_moving_statistics(training, rng):
    dense, bn, s, x, y, conv = _setup(rng)
    expected = ref.batch_norm(conv, s["bn_gamma"], s["bn_beta"], s["bn_mean"], s["bn_var"], 1e-5) + x
    out = np.asarray(project_and_add(y, dense, bn, x, training=training))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_training_uses_batch_statistics(rng):
    dense, bn, s, x, y, conv = _setup(rng)
    flat = conv.reshape(-1, X_SHAPE[-1])
    mean, var = flat.mean(0), flat.var(0)
    expected = ref.batch_norm(conv, s["bn_gamma"], s["bn_beta"], mean, var, 1e-5) + x
    out = np.asarray(project_and_add(y, dense, bn, x, training=True))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    # and the moving statistics moved towards the batch's (momentum 0.99)
    assert not np.allclose(np_(bn.moving_mean), s["bn_mean"])


def test_frozen_batch_norm_keeps_moving_statistics_in_training(rng):
    dense, bn, s, x, y, conv = _setup(rng)
    bn.trainable = False
    expected = ref.batch_norm(conv, s["bn_gamma"], s["bn_beta"], s["bn_mean"], s["bn_var"], 1e-5) + x
    out = np.asarray(project_and_add(y, dense, bn, x, training=True))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
