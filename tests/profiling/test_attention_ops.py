"""The fast paths of attention_ops.attend against a float64 NumPy softmax attention."""
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.layers import RegionNonLocal, attention_ops


def reference(q, k, v, similarity):
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    if similarity == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
        k = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
    s = np.einsum("bic,bjc->bij", q, k)
    if similarity == "gaussian":
        e = np.exp(s - s.max(-1, keepdims=True))
        w = e / e.sum(-1, keepdims=True)
    else:
        w = np.maximum(s, 0) / k.shape[1]
    return w @ v


def points(rng, b, n, d, spread):
    # Rows with very different norms: later key blocks raise the running max (online rescaling).
    scale = np.exp(rng.uniform(-1.0, 1.0, (b, n, 1))) * spread
    return (rng.normal(size=(b, n, d)) * scale).astype("float32")


@pytest.mark.parametrize("similarity", ["gaussian", "cosine"])
@pytest.mark.parametrize("chunk", [None, 1, 7, 40, 64, 300])
@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("fixed_offsets", [True, False])
def test_symmetric_path_is_exact(similarity, chunk, graph, fixed_offsets, rng):
    p = points(rng, 2, 300, 16, 1.0)
    v = rng.normal(size=(2, 300, 8)).astype("float32")
    q = attention_ops.l2_normalize(p) if similarity == "cosine" else tf.constant(p)

    def run(q, v):
        return attention_ops.attend(q, q, v, similarity, chunk, symmetric=True,
                                    fixed_offsets=fixed_offsets)

    out = (tf.function(run) if graph else run)(q, v)
    expected = reference(p, p, v, similarity)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


def test_symmetric_blocks_really_split(monkeypatch, rng):
    """Default block smaller than N: several blocks, large logits (|s| up to ~1e3)."""
    monkeypatch.setattr(attention_ops, "DEFAULT_BLOCK", 64)
    assert attention_ops._symmetric_blocks(300, None) == 60
    p = points(rng, 1, 300, 32, 3.0)
    v = rng.normal(size=(1, 300, 8)).astype("float32")
    out = attention_ops.attend(tf.constant(p), tf.constant(p), v, "gaussian", symmetric=True)
    expected = reference(p, p, v, "gaussian")
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


def test_block_choice_keeps_the_chunk_memory_bound():
    for n in (100, 300, 6272, 1568):
        for chunk in (1, 8, 50, 256, 1024):
            block = attention_ops._symmetric_blocks(n, chunk)
            if block is not None:
                assert block * block <= max(chunk * n, chunk * chunk)
                assert -(-n // block) <= attention_ops.MAX_BLOCKS or block <= chunk


@pytest.mark.parametrize("similarity", ["gaussian", "cosine"])
def test_symmetric_gradients_match(similarity, rng):
    p = tf.constant(points(rng, 1, 130, 8, 1.0))
    v = tf.constant(rng.normal(size=(1, 130, 4)).astype("float32"))
    grads = []
    for symmetric in (False, True):
        with tf.GradientTape() as tape:
            tape.watch([p, v])
            y = attention_ops.attend(p, p, v, similarity, 40, symmetric=symmetric)
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
    for layer in (a, b):  # non-zero BN so the attention output shows
        layer.bn.gamma.assign(np.ones(16, "float32"))
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), rtol=1e-5, atol=1e-5)


def test_symmetric_path_converts_to_tflite_builtins(rng):
    x = rng.normal(size=(1, 2, 6, 6, 8)).astype("float32")
    layer = RegionNonLocal(kernel_size=3, query_chunk_size=24)
    layer.build(x.shape)
    layer.bn.gamma.assign(np.ones(8, "float32"))
    fn = tf.function(lambda t: layer(t, training=False),
                     input_signature=[tf.TensorSpec(x.shape, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flat = converter.convert()
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    interp = Interpreter(model_content=flat)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, np.asarray(layer(x, training=False)), rtol=1e-4, atol=1e-4)


def _half_norm_spread(p):
    h = 0.5 * np.sum(np.asarray(p, np.float64) ** 2, axis=-1)
    return (h.max(axis=1) - h.min(axis=1)).max()


def _logsumexp(p):
    s = np.einsum("bic,bjc->bij", *(np.asarray(t, np.float64) for t in (p, p)))
    top = s.max(-1, keepdims=True)
    return top + np.log(np.exp(s - top).sum(-1, keepdims=True))


def _count_calls(monkeypatch, name):
    calls = []
    original = getattr(attention_ops, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(attention_ops, name, counted)
    return calls


@pytest.mark.parametrize("graph", [False, True])
def test_fixed_offset_path_is_exact(graph, monkeypatch, rng):
    """Norms spread within the bound: the one-exp-per-block path runs and is exact, L too."""
    monkeypatch.setattr(attention_ops, "DEFAULT_BLOCK", 64)
    fixed = _count_calls(monkeypatch, "_fixed_offset_forward")
    p = points(rng, 2, 300, 32, 0.5)
    assert 5.0 < _half_norm_spread(p) <= attention_ops.FIXED_OFFSET_MAX_SPREAD
    v = rng.normal(size=(2, 300, 8)).astype("float32")

    def run(p, v):
        return attention_ops._symmetric_forward(p, v, "gaussian", 60)

    y, lse = (tf.function(run) if graph else run)(tf.constant(p), tf.constant(v))
    assert fixed
    expected = reference(p, p, v, "gaussian")
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(lse.numpy(), _logsumexp(p), rtol=1e-6, atol=1e-4)


def test_wide_norm_spread_falls_back_to_running_maxima(monkeypatch, rng):
    """One clip whose |p|^2 / 2 spans ~10^3: the fixed offsets would underflow whole rows of it;
    the batch takes the running-max path instead and stays exact."""
    p = np.concatenate([points(rng, 1, 300, 32, 0.5), points(rng, 1, 300, 32, 4.0)])
    assert _half_norm_spread(p[:1]) <= attention_ops.FIXED_OFFSET_MAX_SPREAD
    assert _half_norm_spread(p[1:]) > 10 * attention_ops.FIXED_OFFSET_MAX_SPREAD
    v = rng.normal(size=(2, 300, 8)).astype("float32")
    expected = reference(p, p, v, "gaussian")
    tolerance = dict(rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    running = _count_calls(monkeypatch, "_running_max_forward")
    out = tf.function(lambda p, v: attention_ops.attend(p, p, v, "gaussian", 64, symmetric=True))
    np.testing.assert_allclose(out(tf.constant(p), tf.constant(v)).numpy(), expected, **tolerance)
    assert running
    # Without the guard the fixed offsets lose the low-norm rows of the wide clip.
    monkeypatch.setattr(attention_ops, "FIXED_OFFSET_MAX_SPREAD", np.inf)
    unguarded = attention_ops._symmetric_attend(tf.constant(p), tf.constant(v), "gaussian", 60)
    wrong = ~np.isclose(unguarded.numpy()[1], expected[1], **tolerance)
    assert wrong.any()
    np.testing.assert_allclose(unguarded.numpy()[0], expected[0], **tolerance)


def _graph_op_types(fixed_offsets, p, v):
    run = tf.function(lambda p, v: attention_ops.attend(p, p, v, "gaussian", 64, symmetric=True,
                                                        fixed_offsets=fixed_offsets))
    graph = run.get_concrete_function(tf.constant(p), tf.constant(v)).graph
    return {op.type for op in graph.get_operations()}


def test_fixed_offsets_false_builds_no_cond(rng):
    """The running-max path alone (exact on any norms) leaves no IF op for TFLite / serving."""
    p = points(rng, 1, 300, 32, 0.5)
    v = rng.normal(size=(1, 300, 8)).astype("float32")
    assert {"If", "StatelessIf"} & _graph_op_types(True, p, v)
    assert not {"If", "StatelessIf"} & _graph_op_types(False, p, v)
