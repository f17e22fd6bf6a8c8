"""Initialisation as the authors' release: the scales of every attention sub-layer, independent
draws for every sub-layer, zero-initialised outputs, and the starting attention (nearly uniform).

The expected bounds are derived here from PyTorch's rules, written out: a conv / Linear weight of
shape (out, in, *k) has fan_in = in * prod(k), fan_out = out * prod(k); its default init is
U(+-1/sqrt(fan_in)) for weight and bias; ``xavier_uniform_`` is U(+-sqrt(6 / (fan_in + fan_out))).
The layers are only built (no forward) at the paper's res3 / res4 sizes.
"""
import math

import keras
import numpy as np
import pytest

from rnl_keras.layers import ChannelGate, NonLocal, RegionNonLocal, SqueezeExcite
from rnl_keras.layers.initializers import (ReleaseDepthwiseXavierUniform, clone_initializer,
                                           f_theta_bound)

RES3 = ((1, 8, 28, 28, 512), (3, 7, 7))    # C = 512, C' = 256
RES4 = ((1, 8, 14, 14, 1024), (3, 3, 3))   # C = 1024, C' = 512


def _torch_fans(weight_shape):
    receptive = math.prod(weight_shape[2:])
    return weight_shape[1] * receptive, weight_shape[0] * receptive


def _release_f_theta_bound(c_inner, kernel_size):
    """xavier_uniform_ on the release's grouped weight (C', C' // groups, kt, kh, kw)."""
    groups = max(c_inner // 32, 1)
    fan_in, fan_out = _torch_fans((c_inner, c_inner // groups) + tuple(kernel_size))
    return math.sqrt(6.0 / (fan_in + fan_out))


def _assert_uniform(values, bound, name):
    """|w| <= bound, max |w| close to it, and (large tensors) std = bound / sqrt(3), mean ~ 0."""
    w = np.asarray(values, np.float64).ravel()
    n = w.size
    top = np.abs(w).max()
    assert top <= bound * (1 + 1e-6), f"{name}: max |w| {top} above the bound {bound}"
    # P(max |w| < (1 - 10/n) b) = (1 - 10/n)^n ~ e^-10 for a uniform draw
    assert top >= bound * (1 - 10.0 / n), f"{name}: max |w| {top} far below the bound {bound}"
    if n >= 10000:  # relative standard error of the std ~ 0.45 / sqrt(n) < 0.5 %
        assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.02), name
        assert abs(w.mean()) < 5 * bound / math.sqrt(3 * n), name


def test_f_theta_bound_follows_the_release_grouping():
    assert f_theta_bound(256, (3, 7, 7)) == pytest.approx(0.01190, abs=5e-6)
    assert f_theta_bound(512, (3, 3, 3)) == pytest.approx(0.02021, abs=5e-6)  # sqrt(6 / (544 * 27))
    for c_inner in (1, 8, 31, 32, 48, 63, 64, 80, 96, 256, 1000):
        for kernel in ((3, 7, 7), (3, 3, 3), (1, 1, 1)):
            assert f_theta_bound(c_inner, kernel) == pytest.approx(
                _release_f_theta_bound(c_inner, kernel), rel=1e-12), (c_inner, kernel)


@pytest.mark.parametrize("shape, kernel_size", [RES3, RES4], ids=["res3", "res4"])
def test_region_nonlocal_scales_as_the_release(shape, kernel_size):
    channels = shape[-1]
    inner = channels // 2
    layer = RegionNonLocal(kernel_size=kernel_size)
    layer.build(shape)
    _assert_uniform(layer.theta.kernel, 1 / math.sqrt(channels), "theta kernel")
    _assert_uniform(layer.theta.bias, 1 / math.sqrt(channels), "theta bias")
    _assert_uniform(layer.f_theta_kernel, _release_f_theta_bound(inner, kernel_size), "F_theta")
    _assert_uniform(layer.w_z.kernel, 1 / math.sqrt(inner), "W_z kernel")
    _assert_uniform(layer.w_z.bias, 1 / math.sqrt(inner), "W_z bias")
    for weight in (layer.bn.gamma, layer.bn.beta):
        assert not np.any(np.asarray(weight)), "the BN after W_z must start at gamma = beta = 0"


def test_nonlocal_scales_and_independent_draws():
    layer = NonLocal()
    layer.build(RES3[0])
    kernels = {}
    for name in ("theta", "phi", "g"):
        dense = getattr(layer, name)
        _assert_uniform(dense.kernel, 1 / math.sqrt(512), f"{name} kernel")
        _assert_uniform(dense.bias, 1 / math.sqrt(512), f"{name} bias")
        kernels[name] = np.asarray(dense.kernel).ravel()
    _assert_uniform(layer.w.kernel, 1 / math.sqrt(256), "W kernel")
    _assert_uniform(layer.w.bias, 1 / math.sqrt(256), "W bias")
    assert not np.any(np.asarray(layer.bn.gamma)) and not np.any(np.asarray(layer.bn.beta))
    for a, b in (("theta", "phi"), ("theta", "g"), ("phi", "g")):
        # 131072 independent pairs: |corr| ~ 0.003; identical kernels give 1
        assert _independent(kernels[a], kernels[b]), (a, b)


def _corr(a, b):
    return abs(np.corrcoef(np.asarray(a).ravel(), np.asarray(b).ravel())[0, 1])


def _independent(a, b):
    """Not equal and uncorrelated: |corr| below 5 standard errors of independent draws."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    return not np.array_equal(a, b) and _corr(a, b) < 5 / math.sqrt(a.size)


def test_two_blocks_and_their_sub_layers_draw_independently():
    shape = (1, 4, 8, 8, 256)
    first, second = RegionNonLocal(kernel_size=3), RegionNonLocal(kernel_size=3)
    first.build(shape)
    second.build(shape)
    for name in ("theta.kernel", "theta.bias", "f_theta_kernel", "w_z.kernel", "w_z.bias"):
        owner, _, attr = name.rpartition(".")
        a = getattr(getattr(first, owner) if owner else first, attr)
        b = getattr(getattr(second, owner) if owner else second, attr)
        assert _independent(a, b), name
    w_z = np.asarray(first.w_z.kernel)
    assert _independent(first.theta.kernel, w_z.T)
    assert _independent(first.theta.kernel, w_z.reshape(256, 128))
    assert _independent(first.theta.bias, first.w_z.bias[:128])


def test_a_user_initializer_is_cloned_per_sub_layer():
    shared = keras.initializers.GlorotUniform()
    layer = NonLocal(kernel_initializer=shared)
    layer.build((1, 2, 4, 4, 256))
    theta, phi, g = (np.asarray(getattr(layer, n).kernel) for n in ("theta", "phi", "g"))
    assert _independent(theta, phi) and _independent(theta, g) and _independent(phi, g)
    bound = math.sqrt(6 / (256 + 128))  # the user's Glorot scale is kept
    assert np.abs(theta).max() <= bound and np.abs(theta).max() > 0.95 * bound
    # seeded: reproducible across layers, still different per sub-layer
    seeded = [NonLocal(kernel_initializer=keras.initializers.GlorotUniform(seed=7)) for _ in "ab"]
    for block in seeded:
        block.build((1, 2, 4, 4, 64))
    np.testing.assert_array_equal(seeded[0].theta.kernel, seeded[1].theta.kernel)
    assert _independent(seeded[0].theta.kernel, seeded[0].phi.kernel)
    rnl = RegionNonLocal(kernel_size=3, kernel_initializer="he_normal", bias_initializer="ones")
    rnl.build((1, 2, 4, 4, 64))
    np.testing.assert_array_equal(rnl.theta.bias, np.ones(32))
    assert np.asarray(rnl.theta.kernel).std() == pytest.approx(math.sqrt(2 / 64), rel=0.15)


def test_clone_initializer_offsets_seeds_and_copies():
    base = keras.initializers.RandomNormal(seed=3)
    clones = [clone_initializer(base, i) for i in range(3)]
    assert all(c is not base for c in clones)
    assert [c.get_config()["seed"] for c in clones] == [3, 4, 5]
    unseeded = keras.initializers.RandomUniform()
    a, b = clone_initializer(unseeded), clone_initializer(unseeded)
    assert not np.array_equal(a((64,)), b((64,)))


def test_same_global_seed_same_initial_weights():
    weights = []
    for _ in range(2):
        keras.utils.set_random_seed(11)
        layer = RegionNonLocal(kernel_size=3)
        layer.build((1, 2, 4, 4, 64))
        weights.append(layer.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_release_f_theta_initializer_serialises_and_checks_its_shape():
    init = ReleaseDepthwiseXavierUniform(seed=5)
    clone = keras.initializers.deserialize(keras.initializers.serialize(init))
    assert isinstance(clone, ReleaseDepthwiseXavierUniform)
    np.testing.assert_array_equal(init((3, 3, 3, 64)), clone((3, 3, 3, 64)))
    with pytest.raises(ValueError, match=r"\(kt, kh, kw, C'\)"):
        init((3, 3, 64))
    with pytest.raises(ValueError, match="seed"):
        ReleaseDepthwiseXavierUniform(seed="x")


def test_channel_gate_as_released():
    gate = ChannelGate()
    gate.build(RES3[0])
    bound = 1 / math.sqrt(512)
    _assert_uniform(gate.w_k.kernel, bound, "W_k kernel")
    _assert_uniform(gate.w_k.bias, bound, "W_k bias")
    _assert_uniform(gate.w_v1.kernel, bound, "W_v1 kernel")
    _assert_uniform(gate.w_v1.bias, bound, "W_v1 bias")
    assert not np.any(np.asarray(gate.w_v2.kernel)) and not np.any(np.asarray(gate.w_v2.bias))
    # BatchNorm1d(momentum=0.01): running = 0.99 running + 0.01 batch, Keras' momentum 0.99
    assert gate.bn1.momentum == pytest.approx(0.99) and gate.bn1.epsilon == pytest.approx(1e-5)
    clone = ChannelGate.from_config(ChannelGate(bn_momentum=0.9).get_config())
    assert clone.bn_momentum == pytest.approx(0.9)


@pytest.mark.parametrize("mode", ["add", "scale"])
def test_squeeze_excite_has_pytorch_defaults(mode):
    layer = SqueezeExcite(16, mode=mode)
    layer.build(RES3[0])
    _assert_uniform(layer.w1.kernel, 1 / math.sqrt(512), "W1 kernel")
    if mode == "add":
        assert layer.w1.bias is None and layer.w2.bias is None
        assert not np.any(np.asarray(layer.w2.kernel))
    else:
        _assert_uniform(layer.w1.bias, 1 / math.sqrt(512), "W1 bias")
        _assert_uniform(layer.w2.kernel, 1 / math.sqrt(32), "W2 kernel")
        _assert_uniform(layer.w2.bias, 1 / math.sqrt(32), "W2 bias")


def test_initializer_configs_round_trip():
    layer = RegionNonLocal(kernel_size=3, kernel_initializer=keras.initializers.HeNormal(seed=2))
    config = layer.get_config()
    clone = RegionNonLocal.from_config(config)
    assert isinstance(clone.kernel_initializer, keras.initializers.HeNormal)
    assert clone.kernel_initializer.get_config()["seed"] == 2 and clone.bias_initializer is None
    default = RegionNonLocal.from_config(RegionNonLocal().get_config())
    assert default.kernel_initializer is None and default.bias_initializer is None
    nl = NonLocal.from_config(NonLocal(bias_initializer="zeros").get_config())
    assert nl.kernel_initializer is None
    assert isinstance(nl.bias_initializer, keras.initializers.Zeros)


def test_fresh_block_attention_starts_nearly_uniform(rng):
    """res3 channels and kernel: with the release's init the logits p_i . p_j of a post-ReLU clip
    are ~0.02 (the old init: ~10, nearly one-hot rows), so every row is close to 1/N; the block
    itself is still the identity."""
    x = np.maximum(rng.normal(0, 1, (1, 4, 14, 14, 512)), 0).astype("float32")
    layer = RegionNonLocal(kernel_size=(3, 7, 7))
    layer.build(x.shape)
    n = 4 * 14 * 14
    rows = np.asarray(layer.attention_weights(x, list(range(0, n, 7))), np.float64)
    assert rows.max(-1).mean() < 1.5 / n
    assert rows.min(-1).mean() > 0.5 / n
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
