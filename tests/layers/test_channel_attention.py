"""SqueezeExcite (eqs. (10)-(12) and the original SE), ChannelGate and SEChain vs NumPy."""
import keras
import numpy as np
import pytest

from rnl_keras.layers import ChannelGate, SEChain, SqueezeExcite
from tests.layers import numpy_reference as ref
from tests.layers.helpers import dense_weights, randomise_bn, randomise_dense, rnl_weights

SHAPE = (2, 4, 6, 8, 32)


def _x(rng):
    return rng.normal(0, 1, SHAPE).astype("float32")


def test_additive_se_matches_eqs_10_to_12(rng):
    x = _x(rng)
    layer = SqueezeExcite(reduction=4, mode="add")
    layer.build(x.shape)
    randomise_dense(layer.w2, rng)
    w = {**dense_weights(layer.w1, "w1"), **dense_weights(layer.w2, "w2"),
         **randomise_bn(layer.bn, rng)}
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), ref.se_add(x, w),
                               rtol=1e-5, atol=1e-5)


def test_additive_se_starts_as_identity(rng):
    x = _x(rng)
    np.testing.assert_array_equal(np.asarray(SqueezeExcite(4)(x, training=False)), x)


def test_original_se_matches_numpy(rng):
    x = _x(rng)
    layer = SqueezeExcite(reduction=4, mode="scale")
    layer.build(x.shape)
    w = {**dense_weights(layer.w1, "w1"), **dense_weights(layer.w2, "w2")}
    np.testing.assert_allclose(np.asarray(layer(x)), ref.se_scale(x, w), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode, expected", [("scale", 2 * 512 * 32 + 32 + 512),
                                            ("add", 2 * 512 * 32 + 2 * 32)])
def test_se_parameters_at_r16(mode, expected):
    """Table III: 5 SE blocks with r = 16 weigh ~0.46M; one at res3 (C = 512)."""
    layer = SqueezeExcite(16, mode=mode)
    layer.build((1, 8, 28, 28, 512))
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == expected


def test_channel_gate_matches_numpy(rng):
    x = _x(rng)
    layer = ChannelGate()
    layer.build(x.shape)
    randomise_dense(layer.w_v2, rng)
    w = {**dense_weights(layer.w_k, "w_k"), **dense_weights(layer.w_v1, "w_v1"),
         **dense_weights(layer.w_v2, "w_v2"), **randomise_bn(layer.bn1, rng, "bn1")}
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), ref.channel_gate(x, w),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(ChannelGate()(x, training=False)), x)


@pytest.mark.parametrize("channel_attention", ["se", "gate"])
def test_chain_is_channel_attention_then_rnl(channel_attention, rng):
    x = _x(rng)
    chain = SEChain(channel_attention, se_reduction=4, kernel_size=(3, 3, 3))
    chain.build(x.shape)
    if channel_attention == "se":
        randomise_dense(chain.channel.w2, rng)
        w = {**dense_weights(chain.channel.w1, "w1"), **dense_weights(chain.channel.w2, "w2"),
             **randomise_bn(chain.channel.bn, rng)}
        v = ref.se_add(x, w)
    else:
        gate = chain.channel
        randomise_dense(gate.w_v2, rng)
        w = {**dense_weights(gate.w_k, "w_k"), **dense_weights(gate.w_v1, "w_v1"),
             **dense_weights(gate.w_v2, "w_v2"), **randomise_bn(gate.bn1, rng, "bn1")}
        v = ref.channel_gate(x, w)
    expected, _ = ref.rnl_block(v, rnl_weights(chain.rnl, rng), "gaussian", "conv", (3, 3, 3))
    out = np.asarray(chain(x, training=False))
    assert np.abs(out - expected).max() / np.abs(expected - x).max() < 1e-5


def test_chain_config_round_trip():
    chain = SEChain("gate", gate_reduction=4, similarity="cosine", kernel_size=3,
                    query_chunk_size=16, name="chain")
    clone = SEChain.from_config(keras.saving.serialize_keras_object(chain)["config"])
    assert clone.channel_attention == "gate" and clone.gate_reduction == 4
    assert clone.rnl.similarity == "cosine" and clone.rnl.query_chunk_size == 16
    assert clone.name == "chain"


def test_bad_modes_are_refused():
    with pytest.raises(ValueError, match="mode"):
        SqueezeExcite(mode="mul")
    with pytest.raises(ValueError, match="channel_attention"):
        SEChain("cbam")
