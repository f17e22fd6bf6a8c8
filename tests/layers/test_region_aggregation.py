"""F_theta's channel-wise 3D conv and max pooling (eq. (3)) against the float64 NumPy loops."""
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.layers.region_aggregation import depthwise_conv3d, max_pool3d
from tests.layers import numpy_reference as ref

# (B, T, kt): clips next to each other (taps must not reach into the neighbouring clip), a
# temporal kernel longer than the clip, a single frame, kt = 1.
CASES = [(3, 4, 3), (2, 2, 5), (2, 1, 3), (2, 5, 1), (1, 3, 7)]


@pytest.mark.parametrize("batch,frames,kt", CASES)
@pytest.mark.parametrize("graph", [False, True])
def test_depthwise_conv3d_matches_numpy(batch, frames, kt, graph, rng):
    x = rng.normal(0, 1, (batch, frames, 5, 6, 4)).astype("float32")
    kernel = rng.normal(0, 1, (kt, 3, 5, 4)).astype("float32")
    fn = tf.function(depthwise_conv3d) if graph else depthwise_conv3d
    out = np.asarray(fn(tf.constant(x), tf.constant(kernel)))
    expected = ref.region_conv(x, kernel)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_depthwise_conv3d_unknown_batch(rng):
    kernel = tf.constant(rng.normal(0, 1, (3, 3, 3, 4)).astype("float32"))
    fn = tf.function(lambda x: depthwise_conv3d(x, kernel),
                     input_signature=[tf.TensorSpec((None, 4, 5, 6, 4), tf.float32)])
    x = rng.normal(0, 1, (3, 4, 5, 6, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(fn(x)), ref.region_conv(x, kernel.numpy()),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch,frames,kt", CASES)
def test_max_pool3d_matches_numpy(batch, frames, kt, rng):
    x = rng.normal(0, 1, (batch, frames, 5, 6, 4)).astype("float32")
    out = np.asarray(max_pool3d(tf.constant(x), (kt, 3, 5)))
    np.testing.assert_array_equal(out, ref.region_max(x, (kt, 3, 5)).astype("float32"))
