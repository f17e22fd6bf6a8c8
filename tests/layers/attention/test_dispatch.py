"""attention.dispatch: the path decision, graphs without runtime branches, TFLite builtins."""
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.layers import RegionNonLocal, attention
from rnl_keras.layers.attention import dispatch
from rnl_keras.layers.attention.dispatch import Path, choose_path


@pytest.mark.parametrize("args, expected", [
    (("dot", 6272, 6272, 1024, True, True), Path("dot", None)),
    (("gaussian", 6272, 6272, None, True, False), Path("symmetric", 896)),     # 7 x 896
    (("gaussian", 6272, 6272, 1024, True, True), Path("symmetric_recompute", 896)),
    (("cosine", 300, 300, 7, True, False), Path("symmetric", 19)),            # 16 x 19 rows
    (("gaussian", 6272, 6272, 1, True, False), Path("chunked", 1)),          # blocks too many
    (("gaussian", 6272, 1568, 1024, False, False), Path("chunked", 1024)),   # key sub-sampling
    (("gaussian", 6272, 1568, 1024, False, True), Path("chunked_recompute", 1024)),
    (("gaussian", 6272, 1568, None, False, True), Path("rows", None)),
    (("gaussian", 100, 100, 128, False, False), Path("rows", None)),         # chunk covers N
    (("gaussian", None, None, 64, True, False), Path("rows", None)),         # N unknown
    (("gaussian", 500, None, 64, False, True), Path("chunked", 64)),         # N_k unknown
])
def test_choose_path(args, expected):
    assert choose_path(*args) == expected
    assert expected.kernel in dispatch.PATHS


def test_choose_path_refuses_unknown_similarity():
    with pytest.raises(ValueError, match="similarity must be one of"):
        choose_path("euclid", 10, 10)


def _op_types(similarity, chunk, symmetric, training):
    def run(p, v):
        with tf.GradientTape() as tape:
            tape.watch(p)
            y = attention.attend(p, p, v, similarity, chunk, symmetric=symmetric,
                                 recompute_grad=training)
        return (y, tape.gradient(tf.reduce_sum(y), p)) if training else y

    spec = [tf.TensorSpec((2, 200, 8)), tf.TensorSpec((2, 200, 4))]
    graph = tf.function(run).get_concrete_function(*spec).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize("similarity", ["gaussian", "cosine", "dot"])
@pytest.mark.parametrize("chunk, symmetric", [(None, True), (64, True), (64, False),
                                              (None, False)])
@pytest.mark.parametrize("training", [False, True])
def test_no_runtime_branch_in_any_path(similarity, chunk, symmetric, training):
    """The path is fixed at trace time: no If / Case / While in forward or backward graphs."""
    types = _op_types(similarity, chunk, symmetric, training)
    assert not {"If", "StatelessIf", "Case", "StatelessCase", "While", "StatelessWhile"} & types
    assert "MatMul" in types or "BatchMatMulV2" in types


def test_trained_like_norms_take_the_same_path(rng, monkeypatch):
    """Fresh (h spread ~1) and trained-like (h spread ~1e4) points: one graph, exact on both."""
    monkeypatch.setattr(dispatch, "DEFAULT_BLOCK", 64)
    run = tf.function(lambda p, v: attention.attend(p, p, v, "gaussian", symmetric=True))
    v = rng.normal(size=(1, 200, 4)).astype("float32")
    for scale in (0.1, 10.0):
        p = (rng.normal(size=(1, 200, 16)) * np.exp(rng.uniform(-1, 1, (1, 200, 1))) * scale)
        p = p.astype("float32")
        s = np.einsum("bic,bjc->bij", p.astype(np.float64), p.astype(np.float64))
        w = np.exp(s - s.max(-1, keepdims=True))
        expected = (w / w.sum(-1, keepdims=True)) @ v
        np.testing.assert_allclose(run(p, v).numpy(), expected, rtol=1e-5,
                                   atol=1e-5 * np.abs(expected).max())
    assert run.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("key_subsample", [False, True])
def test_rnl_block_converts_to_tflite_builtins(key_subsample, rng):
    x = rng.normal(size=(1, 2, 6, 6, 8)).astype("float32")
    layer = RegionNonLocal(kernel_size=3, query_chunk_size=24, key_subsample=key_subsample)
    layer.build(x.shape)
    layer.bn.gamma.assign(np.ones(8, "float32"))
    layer.f_theta_kernel.assign(layer.f_theta_kernel * 30.0)
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
