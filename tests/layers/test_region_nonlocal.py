"""RegionNonLocal against a float64 NumPy implementation of eqs. (3)-(9)."""
import keras
import numpy as np
import pytest

from rnl_keras.layers import RegionNonLocal
from tests.layers import numpy_reference as ref
from tests.layers.helpers import rnl_weights

SHAPE = (2, 4, 6, 8, 16)  # B, T, H, W, C (C' = 8, N = 192)


def _clip(rng, shape=SHAPE):
    return rng.normal(0, 1, shape).astype("float32")


def _relative_error(out, expected, x):
    """max |error| of the block's contribution z - x, relative to its size."""
    return np.abs((out - x) - (expected - x)).max() / np.abs(expected - x).max()


@pytest.mark.parametrize("similarity", ["gaussian", "dot", "cosine"])
@pytest.mark.parametrize("aggregation", ["conv", "avg", "max"])
def test_matches_numpy_equations(similarity, aggregation, rng):
    x = _clip(rng)
    layer = RegionNonLocal(similarity=similarity, aggregation=aggregation, kernel_size=(3, 5, 3))
    layer.build(x.shape)
    weights = rnl_weights(layer, rng)
    expected, _ = ref.rnl_block(x, weights, similarity, aggregation, (3, 5, 3))
    out = np.asarray(layer(x, training=False))
    assert _relative_error(out, expected, x) < 1e-5


@pytest.mark.parametrize("scale", [0.3, 6.0])
def test_gaussian_blocks_match_numpy(scale, rng):
    """Small and trained-like spreads of h = |p|^2 / 2 within a clip (below 60 and beyond 300),
    in blocks of 64 rows: the same numbers as the equations."""
    x = _clip(rng) * scale
    layer = RegionNonLocal(kernel_size=(3, 5, 3), query_chunk_size=64)
    layer.build(x.shape)
    weights = rnl_weights(layer, rng)
    points = np.asarray(layer.embeddings(x)[0], np.float64)
    half_norms = 0.5 * (points ** 2).sum(-1)
    spread = (half_norms.max(1) - half_norms.min(1)).max()
    assert spread < 60 if scale < 1 else spread > 300, spread
    expected, _ = ref.rnl_block(x, weights, "gaussian", "conv", (3, 5, 3))
    out = np.asarray(layer(x, training=False))
    assert _relative_error(out, expected, x) < 1e-5


@pytest.mark.parametrize("similarity", ["gaussian", "dot", "cosine"])
def test_key_subsampling_matches_numpy(similarity, rng):
    x = _clip(rng)
    layer = RegionNonLocal(similarity=similarity, kernel_size=3, key_subsample=True)
    layer.build(x.shape)
    weights = rnl_weights(layer, rng)
    expected, _ = ref.rnl_block(x, weights, similarity, "conv", (3, 3, 3), key_subsample=True)
    assert _relative_error(np.asarray(layer(x, training=False)), expected, x) < 1e-5


@pytest.mark.parametrize("similarity", ["gaussian", "dot", "cosine"])
@pytest.mark.parametrize("chunk", [1, 50, 64, 191])
def test_query_chunks_change_nothing(similarity, chunk, rng):
    x = _clip(rng)
    full = RegionNonLocal(similarity=similarity, kernel_size=3)
    full.build(x.shape)
    rnl_weights(full, rng)
    chunked = RegionNonLocal(similarity=similarity, kernel_size=3, query_chunk_size=chunk)
    chunked.build(x.shape)
    chunked.set_weights(full.get_weights())
    a = np.asarray(full(x, training=False))
    b = np.asarray(chunked(x, training=False))
    assert np.abs(a - b).max() <= 1e-6 * np.abs(a - x).max()


def test_query_chunks_inside_a_compiled_graph(rng):
    """The chunk ordering path (graph mode) gives the same numbers as eager mode."""
    x = _clip(rng)
    layer = RegionNonLocal(kernel_size=3, query_chunk_size=48)
    layer.build(x.shape)
    rnl_weights(layer, rng)
    inputs = keras.Input(SHAPE[1:])
    model = keras.Model(inputs, layer(inputs))
    eager = np.asarray(layer(x, training=False))
    graph = model.predict(x, verbose=0)
    np.testing.assert_allclose(graph, eager, rtol=0, atol=1e-6 * np.abs(eager).max())


def test_fresh_block_is_identity(rng):
    x = _clip(rng)
    for similarity in ("gaussian", "dot", "cosine"):
        layer = RegionNonLocal(similarity=similarity, kernel_size=3)
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)


def test_attention_weights_of_chosen_rows(rng):
    x = _clip(rng)
    layer = RegionNonLocal(kernel_size=(3, 5, 5))
    layer.build(x.shape)
    weights = rnl_weights(layer, rng)
    _, full = ref.rnl_block(x, weights, "gaussian", "conv", (3, 5, 5))
    rows = [0, 17, 191]
    got = np.asarray(layer.attention_weights(x, rows))
    assert got.shape == (2, 3, 192)
    np.testing.assert_allclose(got, full[:, rows], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)


def test_region_summary_is_channel_wise(rng):
    """F_theta must not mix channels (Section III-C): a one-channel input stays one-channel."""
    layer = RegionNonLocal(kernel_size=3)
    layer.build(SHAPE)
    v = np.zeros((1, 4, 6, 8, 8), "float32")
    v[..., 3] = rng.normal(size=(1, 4, 6, 8))
    p = np.asarray(layer.region_summary(v))
    assert np.abs(np.delete(p, 3, axis=-1)).max() == 0.0
    assert np.abs(p[..., 3]).max() > 0


def test_parameter_shapes(rng):
    layer = RegionNonLocal(kernel_size=(3, 7, 7))
    layer.build((1, 8, 28, 28, 512))
    shapes = sorted(tuple(w.shape) for w in layer.trainable_weights)
    assert shapes == sorted([(512, 256), (256,), (3, 7, 7, 256), (256, 512), (512,), (512,),
                             (512,)])


@pytest.mark.parametrize("kwargs, message", [
    ({"similarity": "euclid"}, "similarity"),
    ({"aggregation": "median"}, "aggregation"),
    ({"kernel_size": (3, 4, 4)}, "kernel_size"),
    ({"query_chunk_size": 0}, "query_chunk_size"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RegionNonLocal(**kwargs)


def test_rank_4_input_is_refused():
    with pytest.raises(ValueError, match=r"\(B, T, H, W, C\)"):
        RegionNonLocal()(np.zeros((2, 6, 8, 16), "float32"))


def test_config_round_trip():
    layer = RegionNonLocal(similarity="cosine", aggregation="max", kernel_size=(1, 3, 3),
                           query_chunk_size=32, key_subsample=True, name="blk")
    config = layer.get_config()
    assert "fixed_offsets" not in config
    clone = RegionNonLocal.from_config(config)
    for key in ("similarity", "aggregation", "kernel_size", "query_chunk_size", "key_subsample",
                "reduction", "name"):
        assert getattr(clone, key) == getattr(layer, key)


@pytest.mark.parametrize("value", [True, False])
def test_fixed_offsets_is_deprecated_but_accepted(value, rng):
    """Configs written before the fixed-offset path was retired still load; the flag changes
    neither the config written back nor the numbers."""
    config = {**RegionNonLocal(kernel_size=3, name="old").get_config(), "fixed_offsets": value}
    with pytest.warns(DeprecationWarning, match="fixed_offsets"):
        old = RegionNonLocal.from_config(config)
    assert old.fixed_offsets is False and "fixed_offsets" not in old.get_config()
    x = _clip(rng)
    new = RegionNonLocal(kernel_size=3)
    new.build(x.shape)
    rnl_weights(new, rng)
    old.build(x.shape)
    old.set_weights(new.get_weights())
    np.testing.assert_array_equal(np.asarray(old(x)), np.asarray(new(x)))


def _training_gradients(layer, x, r):
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x, training=True) * r)
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return [np.asarray(g) for g in grads]


@pytest.mark.parametrize("similarity", ["gaussian", "cosine"])
@pytest.mark.parametrize("key_subsample", [False, True])
@pytest.mark.parametrize("chunk", [None, 50])
def test_training_recomputes_the_autodiff_gradients(similarity, key_subsample, chunk, rng,
                                                    monkeypatch):
    """In training the blocked paths recompute the attention blocks in the backward (bounded
    memory): the gradients of the input and of every weight equal plain autodiff of the block
    with the reference attention (the whole weight matrix, ``attention.reference``)."""
    from rnl_keras.layers import attention
    from rnl_keras.layers.attention import reference

    x = _clip(rng)
    r = rng.normal(0, 1, x.shape).astype("float32")
    blocked = RegionNonLocal(similarity=similarity, kernel_size=3, key_subsample=key_subsample,
                             query_chunk_size=chunk)
    blocked.build(x.shape)
    rnl_weights(blocked, rng)
    full = RegionNonLocal(similarity=similarity, kernel_size=3, key_subsample=key_subsample)
    full.build(x.shape)
    full.set_weights(blocked.get_weights())
    got = _training_gradients(blocked, x, r)
    with monkeypatch.context() as patch:
        patch.setattr(attention, "attend",
                      lambda q, k, v, similarity, *args, **kwargs: reference.attend(q, k, v,
                                                                                    similarity))
        expected = _training_gradients(full, x, r)
    # W_z's bias before a training-mode BN has a gradient of exactly 0 (BN removes the mean):
    # both sides must be float32 noise there; everything else must agree.
    scale = max(np.abs(a).max() for a in expected)
    for name, a, b in zip(["x"] + [w.path for w in full.trainable_weights], expected, got):
        if name.endswith("w_z/bias"):
            assert max(np.abs(a).max(), np.abs(b).max()) <= 1e-3 * scale
        else:
            assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max(), name


@pytest.mark.parametrize("training, expected", [(True, "symmetric_recompute"),
                                                (False, "symmetric")])
def test_unchunked_training_takes_the_recomputing_backward(training, expected, rng, monkeypatch):
    """query_chunk_size=None still blocks the symmetric path; in training it recomputes too."""
    from rnl_keras.layers.attention import dispatch

    chosen = []
    original = dispatch.choose_path
    monkeypatch.setattr(dispatch, "choose_path",
                        lambda *args, **kwargs: chosen.append(original(*args, **kwargs))
                        or chosen[-1])
    layer = RegionNonLocal(kernel_size=3)
    layer(_clip(rng), training=training)
    assert [path.kernel for path in chosen] == [expected]
