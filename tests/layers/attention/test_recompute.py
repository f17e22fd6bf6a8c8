"""attend(..., recompute_grad=True): the recomputing backward of attention.recompute against a
float64 NumPy gradient of softmax / ReLU-cosine attention, against TF autodiff of the plain path,
and a structural check that the training graph keeps no N x N tensor."""
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.layers import attention
from tests.layers.numpy_reference import softmax

# name: (N_q, N_k, query_chunk_size, symmetric). Blocks that do not divide N: symmetric 97 rows in
# 25 + 25 + 25 + 22; rows 61 = 3 x 16 + 13 query rows against 83 keys.
CASES = {"symmetric": (97, 97, 30, True), "rows": (61, 83, 16, False)}
D, DV, BATCH = 8, 6, 2


def reference_grads(q, k, v, r, similarity):
    """d sum(y * r) / d(q, k, v) for y_i = sum_j w_ij v_j, float64 (eqs. (5), (7), (9)).

    Gaussian w_i. = softmax_j(q_i . k_j); cosine w_ij = ReLU(q_i . k_j) / N_k with q, k already
    normalised. dL/dw_ij = r_i . v_j, through the softmax Jacobian w (dw - sum_j w dw) or the
    ReLU mask; then dq_i = sum_j ds_ij k_j, dk_j = sum_i ds_ij q_i, dv_j = sum_i w_ij r_i.
    """
    q, k, v, r = (np.asarray(t, np.float64) for t in (q, k, v, r))
    s = np.einsum("bic,bjc->bij", q, k)
    dw = np.einsum("bio,bjo->bij", r, v)
    if similarity == "gaussian":
        w = softmax(s)
        ds = w * (dw - np.sum(w * dw, axis=-1, keepdims=True))
    else:
        w = np.maximum(s, 0.0) / k.shape[1]
        ds = np.where(s > 0.0, dw, 0.0) / k.shape[1]
    return (np.einsum("bij,bjc->bic", ds, k), np.einsum("bij,bic->bjc", ds, q),
            np.einsum("bij,bio->bjo", w, r))


def inputs(rng, case, similarity, dtype="float32"):
    n_q, n_k, _, symmetric = CASES[case]
    q = rng.normal(0.0, 0.6, (BATCH, n_q, D))
    k = q if symmetric else rng.normal(0.0, 0.6, (BATCH, n_k, D))
    if similarity == "cosine":   # attend expects the caller's L2 normalisation
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
        k = q if symmetric else k / np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.normal(size=(BATCH, n_k, DV))
    r = rng.normal(size=(BATCH, n_q, DV))
    return [t.astype("float32") for t in (q, k, v, r)]


def grads(q, k, v, r, similarity, case, recompute=True):
    """(y, d/dq, d/dk, d/dv) of sum(y * r); symmetric: the key is the query (d/dk is None)."""
    _, _, chunk, symmetric = CASES[case]
    with tf.GradientTape() as tape:
        tape.watch([q, k, v])
        y = attention.attend(q, q if symmetric else k, v, similarity, chunk,
                                 symmetric=symmetric, recompute_grad=recompute)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * r)
    return [y] + tape.gradient(loss, [q, k, v])


def assert_close(got, expected, rtol):
    expected = np.asarray(expected, np.float64)
    np.testing.assert_allclose(np.asarray(tf.cast(got, tf.float32)), expected, rtol=rtol,
                               atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("similarity", ["gaussian", "cosine"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_match_numpy(similarity, case, rng):
    q, k, v, r = inputs(rng, case, similarity)
    dq, dk, dv = reference_grads(q, k, v, r, similarity)
    symmetric = CASES[case][3]
    if symmetric:
        dq, dk = dq + dk, None          # dP = dQ + dK
    tensors = [tf.constant(t) for t in (q, k, v)]
    run = lambda q, k, v: grads(q, k, v, r, similarity, case)[1:]   # noqa: E731
    for got in (run(*tensors), tf.function(run)(*tensors)):
        assert_close(got[0], dq, 1e-4)
        assert_close(got[2], dv, 1e-4)
        if symmetric:
            assert got[1] is None
        else:
            assert_close(got[1], dk, 1e-4)


@pytest.mark.parametrize("similarity", ["gaussian", "cosine"])
@pytest.mark.parametrize("case", sorted(CASES) + ["one-block"])
def test_same_forward_and_autodiff_gradients(similarity, case, rng, monkeypatch):
    if case == "one-block":   # symmetric, N below DEFAULT_BLOCK: the single-block path
        monkeypatch.setitem(CASES, case, (45, 45, None, True))
    q, k, v, r = (tf.constant(t) for t in inputs(rng, case, similarity))
    fast, plain = grads(q, k, v, r, similarity, case), grads(q, k, v, r, similarity, case, False)
    np.testing.assert_allclose(fast[0].numpy(), plain[0].numpy(), rtol=0, atol=1e-6)
    for got, expected in zip(fast[1:], plain[1:]):
        assert (got is None) == (expected is None)
        if got is not None:
            assert_close(got, expected.numpy(), 1e-5)


def test_bfloat16_gradients_close_to_float32(rng):
    q, k, v, r = inputs(rng, "symmetric", "gaussian")
    half = [tf.cast(t, tf.bfloat16) for t in (q, k, v)]
    full = [tf.cast(t, tf.float32) for t in half]     # the same (rounded) numbers in float32
    got = grads(*half, r, "gaussian", "symmetric")
    expected = grads(*full, r, "gaussian", "symmetric")
    for g, e in ((got[0], expected[0]), (got[1], expected[1]), (got[3], expected[3])):
        assert g.dtype == tf.bfloat16
        assert np.all(np.isfinite(tf.cast(g, tf.float32).numpy()))
        assert_close(g, e.numpy(), 3e-2)


@pytest.mark.parametrize("similarity, chunk", [("dot", 16), ("gaussian", None)])
def test_unblocked_paths_unchanged(similarity, chunk, rng):
    """dot, no chunking, or N unknown: recompute_grad changes nothing (plain autodiff)."""
    q, k, v, r = (tf.constant(t) for t in inputs(rng, "rows", similarity))

    def run(q, k, v, recompute):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            y = attention.attend(q, k, v, similarity, chunk, recompute_grad=recompute)
            loss = tf.reduce_sum(y * r)
        return [y] + tape.gradient(loss, [q, k, v])

    for got, expected in zip(run(q, k, v, True), run(q, k, v, False)):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    unknown_n = [tf.TensorSpec((BATCH, None, dim)) for dim in (D, D, DV)]
    fn = tf.function(lambda q, k, v: run(q, k, v, True), input_signature=unknown_n)
    for got, expected in zip(fn(q, k, v), run(q, k, v, False)):
        assert_close(got, expected.numpy(), 1e-6)


def _training_graph(similarity, n, chunk, symmetric, recompute):
    @tf.function
    def step(p, v, r):
        with tf.GradientTape() as tape:
            tape.watch([p, v])
            y = attention.attend(p, p, v, similarity, chunk, symmetric=symmetric,
                                 recompute_grad=recompute)
            loss = tf.reduce_sum(y * r)
        return [loss] + tape.gradient(loss, [p, v])

    specs = [tf.TensorSpec((BATCH, n, dim)) for dim in (D, DV, DV)]
    return step.get_concrete_function(*specs)


def _square_outputs(graph, n):
    """Op outputs whose static last two dims are both >= n (an N x N matrix)."""
    return [op.name for op in graph.get_operations() for t in op.outputs
            if t.shape.rank is not None and t.shape.rank >= 2
            and all(dim is not None and dim >= n for dim in t.shape[-2:])]


def _saved_for_backward(function):
    """Elements of the forward's tensors that the backward reads (kept alive between them).

    Forward ops: the ancestors of the loss (output 0); the backward is every other op.
    """
    forward, stack = set(), [function.outputs[0].op]
    while stack:
        op = stack.pop()
        if op.name not in forward:
            forward.add(op.name)
            stack.extend([t.op for t in op.inputs] + list(op.control_inputs))
    saved = {t.ref() for op in function.graph.get_operations() if op.name not in forward
             for t in op.inputs if t.op.name in forward}
    # No cond (whose intermediates would cross as scalar variants hiding their size).
    assert not [t for t in saved if t.deref().dtype == tf.variant]
    return sum(t.deref().shape.num_elements() for t in saved)


@pytest.mark.parametrize("similarity", ["gaussian", "cosine"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_training_graph_has_no_n_by_n_tensor(similarity, symmetric):
    n, chunk = 600, 128
    function = _training_graph(similarity, n, chunk, symmetric, recompute=True)
    assert _square_outputs(function.graph, n) == []
    # Kept from forward to backward: P, V, r, y and L only: O(N d), not the N^2 / 2 exp blocks.
    assert _saved_for_backward(function) <= 2 * BATCH * n * (D + 2 * DV + 1)
    # Plain autodiff keeps the exp / ReLU blocks: about N^2 / 2 (symmetric) or N^2 elements.
    plain = _training_graph(similarity, n, chunk, symmetric, recompute=False)
    assert _saved_for_backward(plain) >= BATCH * n * n // 2
    # The shape check does see a materialised N x N weight matrix (no query chunks).
    materialised = _training_graph(similarity, n, None, False, recompute=True)
    assert _square_outputs(materialised.graph, n)


def test_gradients_under_tf_distribute(rng):
    q, k, v, r = (tf.constant(t) for t in inputs(rng, "symmetric", "gaussian"))
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    step = tf.function(lambda q, v: grads(q, q, v, r, "gaussian", "symmetric")[1::2])
    got = strategy.run(step, args=(q, v))
    expected = grads(q, q, v, r, "gaussian", "symmetric", recompute=False)[1::2]
    for g, e in zip(got, expected):
        assert_close(g, e.numpy(), 1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_trained_like_norms_recompute_the_autodiff_gradients(case, rng):
    """Points whose |p|^2 / 2 spreads over ~1e3 within a clip (trained-like, peaked softmax rows):
    the recomputing backward still equals autodiff of the plain path."""
    q, k, v, r = inputs(rng, case, "gaussian")
    scale = 12.0 * np.exp(rng.uniform(-1.0, 1.0, q.shape[:2] + (1,))).astype("float32")
    q = q * scale
    k = q if CASES[case][3] else k * 12.0
    h = 0.5 * np.sum(q.astype(np.float64) ** 2, axis=-1)
    assert (h.max(1) - h.min(1)).min() > 300
    q, k, v = (tf.constant(t) for t in (q, k, v))
    fast, plain = grads(q, k, v, r, "gaussian", case), grads(q, k, v, r, "gaussian", case, False)
    for got, expected in zip(fast, plain):
        assert (got is None) == (expected is None)
        if got is not None:
            assert np.all(np.isfinite(got.numpy()))
            assert_close(got, expected.numpy(), 1e-4)
