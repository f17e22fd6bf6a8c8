"""The blocked kernels (through attention.attend) against float64 NumPy and the reference."""
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.layers import RegionNonLocal, attention
from rnl_keras.layers.attention import dispatch, kernels, reference
from tests.layers.numpy_reference import pairwise_weights


def numpy_attend(q, k, v, similarity):
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    return pairwise_weights(q, k, similarity) @ v


def points(rng, b, n, d, spread):
    """Rows with very different norms: later key blocks raise the running max (rescaling)."""
    scale = np.exp(rng.uniform(-1.0, 1.0, (b, n, 1))) * spread
    return (rng.normal(size=(b, n, d)) * scale).astype("float32")


def assert_exact(got, expected):
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("similarity", ["gaussian", "cosine"])
@pytest.mark.parametrize("chunk", [None, 1, 7, 40, 64, 300])
@pytest.mark.parametrize("graph", [False, True])
def test_symmetric_path_is_exact(similarity, chunk, graph, rng):
    p = points(rng, 2, 300, 16, 1.0)
    v = rng.normal(size=(2, 300, 8)).astype("float32")
    q = attention.l2_normalize(p) if similarity == "cosine" else tf.constant(p)

    def run(q, v):
        return attention.attend(q, q, v, similarity, chunk, symmetric=True)

    out = (tf.function(run) if graph else run)(q, v)
    assert_exact(out, numpy_attend(p, p, v, similarity))
    np.testing.assert_allclose(np.asarray(out), np.asarray(reference.attend(q, q, v, similarity)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spread", [0.5, 4.0, 30.0])
def test_symmetric_blocks_really_split(spread, monkeypatch, rng):
    """Several blocks; norms from small to trained-like (h = |p|^2 / 2 spanning ~1e1 to ~1e5
    within a clip, logits up to ~1e6): the running-max softmax stays exact, and so does L."""
    monkeypatch.setattr(dispatch, "DEFAULT_BLOCK", 64)
    assert dispatch.symmetric_block_size(300, None) == 60
    p = points(rng, 2, 300, 32, spread)
    v = rng.normal(size=(2, 300, 8)).astype("float32")
    out = attention.attend(tf.constant(p), tf.constant(p), v, "gaussian", symmetric=True)
    s = np.einsum("bic,bjc->bij", *(p.astype(np.float64),) * 2)
    # float32 logits carry an absolute error of a few ulp(|s|): the weights' relative error.
    tolerance = max(1e-5, 4 * 2.0 ** -24 * np.abs(s).max())
    expected = numpy_attend(p, p, v, "gaussian")
    np.testing.assert_allclose(out.numpy(), expected, rtol=tolerance,
                               atol=tolerance * np.abs(expected).max())
    _, lse = kernels.symmetric_forward(tf.constant(p), tf.constant(v), "gaussian", 60)
    top = s.max(-1, keepdims=True)
    np.testing.assert_allclose(lse.numpy(), top + np.log(np.exp(s - top).sum(-1, keepdims=True)),
                               rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("similarity", ["gaussian", "cosine"])
@pytest.mark.parametrize("chunk", [1, 16, 61, None])
def test_chunked_equals_unchunked(similarity, chunk, rng):
    q, k = rng.normal(size=(2, 61, 8)), rng.normal(size=(2, 83, 8))
    v = rng.normal(size=(2, 83, 5)).astype("float32")
    if similarity == "cosine":
        q, k = (attention.l2_normalize(t.astype("float32")) for t in (q, k))
    q, k = tf.cast(q, tf.float32), tf.cast(k, tf.float32)
    chunked = attention.attend(q, k, v, similarity, chunk)
    whole = attention.attend(q, k, v, similarity)
    np.testing.assert_allclose(chunked.numpy(), whole.numpy(), rtol=0, atol=1e-6)
    assert_exact(chunked, numpy_attend(q, k, v, similarity))


def test_dot_is_linear_and_exact(rng):
    q, k = rng.normal(size=(2, 30, 8)), rng.normal(size=(2, 45, 8))
    v = rng.normal(size=(2, 45, 5))
    out = attention.attend(*(tf.constant(t, tf.float32) for t in (q, k, v)), "dot", 7)
    assert_exact(out, numpy_attend(q, k, v, "dot"))


def test_block_choice_keeps_the_chunk_memory_bound():
    for n in (100, 300, 6272, 1568):
        for chunk in (1, 8, 50, 256, 1024):
            block = dispatch.symmetric_block_size(n, chunk)
            if block is not None:
                assert block * block <= max(chunk * n, chunk * chunk)
                assert -(-n // block) <= dispatch.MAX_BLOCKS or block <= chunk


@pytest.mark.parametrize("similarity", ["gaussian", "cosine"])
def test_symmetric_gradients_match(similarity, rng):
    p = tf.constant(points(rng, 1, 130, 8, 1.0))
    v = tf.constant(rng.normal(size=(1, 130, 4)).astype("float32"))
    grads = []
    for symmetric in (False, True):
        with tf.GradientTape() as tape:
            tape.watch([p, v])
            y = attention.attend(p, p, v, similarity, 40, symmetric=symmetric)
            loss = tf.reduce_sum(y * tf.sin(tf.range(4, dtype=tf.float32)))
        grads.append(tape.gradient(loss, [p, v]))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("similarity", ["gaussian", "cosine", "dot"])
@pytest.mark.parametrize("key_subsample", [False, True])
def test_rnl_layer_symmetric_and_plain_agree(similarity, key_subsample, rng):
    x = rng.normal(size=(2, 4, 8, 8, 16)).astype("float32")
    a = RegionNonLocal(similarity=similarity, kernel_size=3, key_subsample=key_subsample)
    a.build(x.shape)
    b = RegionNonLocal(similarity=similarity, kernel_size=3, key_subsample=key_subsample,
                       query_chunk_size=30)
    b.build(x.shape)
    b.set_weights(a.get_weights())
    for layer in (a, b):  # non-zero BN and a larger F_theta, so the attention output shows
        layer.bn.gamma.assign(np.ones(16, "float32"))
        if hasattr(layer, "f_theta_kernel"):
            layer.f_theta_kernel.assign(layer.f_theta_kernel * 30.0)
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("similarity", ["gaussian", "cosine"])
def test_symmetric_path_never_copies_a_score_block(similarity):
    """Every (block x block) tensor of the symmetric forward is a GEMM output or an elementwise
    map / softmax of one: no score block is transposed, sliced or concatenated (the column side
    takes the transposed GEMM (V_a | 1)^T e instead, kernels' docstring)."""
    n, block = 40, 10
    spec = tf.TensorSpec((2, n, 8), tf.float32)
    graph = tf.function(lambda p, v: kernels.symmetric_forward(p, v, similarity, block)[0]
                        ).get_concrete_function(spec, spec).graph
    copies = {"Transpose", "StridedSlice", "Slice", "ConcatV2", "Pack", "Reshape"}
    square = 0
    for op in graph.get_operations():
        for t in op.inputs:
            if t.shape.rank == 3 and tuple(t.shape[1:]) == (block, block):
                square += 1
                assert op.type not in copies, f"{op.type} ({op.name}) copies a score block"
    assert square >= 2 * 10      # the 10 blocks S_ab, each read by two ops at least
