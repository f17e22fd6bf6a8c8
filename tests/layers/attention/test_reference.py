"""attention.reference (the oracle of the fast paths) against float64 NumPy of eqs. (4)-(9)."""
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.layers import attention
from rnl_keras.layers.attention import reference
from tests.layers import numpy_reference as ref


@pytest.mark.parametrize("similarity", ["gaussian", "dot", "cosine"])
def test_reference_matches_numpy(similarity, rng):
    q, k = rng.normal(size=(2, 37, 8)), rng.normal(size=(2, 53, 8))
    v = rng.normal(size=(2, 53, 5))
    qf, kf = (attention.l2_normalize(tf.constant(t, tf.float32)) if similarity == "cosine"
              else tf.constant(t, tf.float32) for t in (q, k))
    w = ref.pairwise_weights(q, k, similarity)           # normalises q, k itself for cosine
    got_w = np.asarray(reference.attention_weights(qf, kf, similarity))
    np.testing.assert_allclose(got_w, w, rtol=1e-5, atol=1e-6 * np.abs(w).max())
    y = np.asarray(reference.attend(qf, kf, tf.constant(v, tf.float32), similarity))
    np.testing.assert_allclose(y, w @ v, rtol=1e-5, atol=1e-5 * np.abs(w @ v).max())
    if similarity == "gaussian":
        np.testing.assert_allclose(got_w.sum(-1), 1.0, rtol=1e-6)


def test_query_rows_weights_are_rows_of_the_matrix(rng):
    q = rng.normal(size=(1, 40, 6)).astype("float32")
    full = ref.pairwise_weights(q, q, "gaussian")
    got = np.asarray(attention.query_rows_weights(q, q, [0, 7, 39], "gaussian"))
    np.testing.assert_allclose(got, full[:, [0, 7, 39]], rtol=1e-5, atol=1e-7)


def test_l2_normalize_matches_torch_semantics():
    x = np.array([[[3.0, 4.0], [0.0, 0.0]]], "float32")
    np.testing.assert_allclose(np.asarray(attention.l2_normalize(x)), [[[0.6, 0.8], [0.0, 0.0]]])


def test_unknown_similarity_is_refused():
    with pytest.raises(ValueError, match="similarity must be one of"):
        reference.attention_weights(np.zeros((1, 2, 3), "float32"), np.zeros((1, 2, 3), "float32"),
                                    "euclid")
