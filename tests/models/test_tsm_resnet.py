"""The TSM-ResNet50 builder: backbone equivalence, Table III parameter counts, serialisation,
gradients, mixed precision and TFLite conversion."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.models import tsm_resnet50

SMALL = dict(num_frames=4, image_size=32)


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _randomise_zero_weights(model, rng):
    """Zero-initialised weights (BN gamma of the blocks, SE/gate W2) get random values, and the
    query/key embeddings are made small: the Gaussian RNL and NL have no 1/sqrt(d) scaling, so on
    random features their softmax saturates and passes (correctly) no gradient to them."""
    for w in model.weights:
        value = w.numpy()
        if not np.any(value):
            w.assign(rng.normal(0, 0.1, value.shape).astype(value.dtype))
        elif w.path.endswith(("f_theta_kernel", "theta/kernel", "phi/kernel")):
            w.assign(value * 0.05)


def test_plain_backbone_equals_keras_resnet50_frame_by_frame(tmp_path, rng):
    reference = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                            input_shape=(64, 64, 3))
    for layer in reference.layers:  # non-trivial BN statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
    path = tmp_path / "resnet50.weights.h5"
    reference.save_weights(path)
    model = tsm_resnet50(10, num_frames=3, image_size=64, attention="none", shift=False,
                         include_top=False, weights=str(path))
    clip = rng.normal(0, 1, (2, 3, 64, 64, 3)).astype("float32")     # RGB (x/255 - mean)/std
    ours = np.asarray(model(clip, training=False))
    # the Caffe input the keras.applications weights expect: BGR on [0, 255] minus the mean
    rgb255 = (clip.astype(np.float64) * [0.229, 0.224, 0.225] + [0.485, 0.456, 0.406]) * 255
    caffe = (rgb255[..., ::-1] - [103.939, 116.779, 123.68]).astype("float32")
    theirs = np.asarray(reference(caffe.reshape(6, 64, 64, 3), training=False)).reshape(2, 3, -1)
    assert ours.shape == (2, 3, 2048)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        tsm_resnet50(10, attention="none", weights=str(tmp_path / "nope.h5"), **SMALL)


@pytest.mark.parametrize("attention, expected_m", [
    ("none", 24.33), ("se", 24.79), ("nl", 31.69),
    ("rnl", 28.1), ("se+rnl", 28.6),  # true counts; the paper's 35.48 / 35.95 add 7.3M of mask
])
def test_table_iii_parameter_counts(attention, expected_m):
    model = tsm_resnet50(400, num_frames=8, image_size=224, attention=attention)
    assert abs(_trainable(model) / 1e6 - expected_m) / expected_m < 0.005


def test_placement_and_kernels_follow_the_release():
    model = tsm_resnet50(5, attention="rnl", **SMALL)
    blocks = {layer.name: layer.kernel_size for layer in model.layers
              if layer.__class__.__name__ == "RegionNonLocal"}
    assert blocks == {"conv3_block1_rnl": (3, 7, 7), "conv3_block3_rnl": (3, 7, 7),
                      "conv4_block1_rnl": (3, 3, 3), "conv4_block3_rnl": (3, 3, 3),
                      "conv4_block5_rnl": (3, 3, 3)}
    shifts = [layer for layer in model.layers if layer.__class__.__name__ == "TemporalShift"]
    assert len(shifts) == 16  # every bottleneck of res2-res5


def test_fresh_attention_blocks_do_not_change_the_backbone(rng):
    clip = rng.normal(0, 1, (1, 4, 32, 32, 3)).astype("float32")
    plain = tsm_resnet50(5, attention="none", **SMALL)
    with_rnl = tsm_resnet50(5, attention="se+rnl", channel_gate_at=(("res3", 0),), **SMALL)
    for layer in plain.layers:
        if layer.weights:
            with_rnl.get_layer(layer.name).set_weights(layer.get_weights())
    np.testing.assert_allclose(with_rnl(clip, training=False), plain(clip, training=False),
                               rtol=1e-5, atol=1e-6)


def _every_block_model():
    return tsm_resnet50(5, attention="se+rnl", channel_gate_at=(("res3", 0),),
                        rnl_kwargs={"query_chunk_size": 8}, **SMALL)


def test_keras_file_round_trip(tmp_path, rng):
    model = _every_block_model()
    _randomise_zero_weights(model, rng)
    clip = rng.normal(0, 1, (2, 4, 32, 32, 3)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(clip, training=False), model(clip, training=False),
                               rtol=1e-6, atol=1e-6)
    clone = keras.Model.from_config(model.get_config())
    assert _trainable(clone) == _trainable(model)


# Biases whose gradient is exactly 0 in exact arithmetic (float32 leaves rounding noise, or 0):
# the gate's key bias and NL's phi bias add a constant to every logit of a softmax; g's, W's and
# W_z's biases add a constant per channel right before a training-mode BatchNorm.
ANALYTICALLY_ZERO_GRADIENT = ("gate/w_k/bias", "cg/w_k/bias", "nl/phi/bias", "nl/g/bias", "nl/w/bias",
                              "rnl/w_z/bias")


@pytest.mark.parametrize("attention", ["se+rnl", "nl", "se", "gate"])
def test_a_gradient_reaches_every_trainable_weight(attention, rng):
    model = tsm_resnet50(5, attention=attention, channel_gate_at=(("res3", 0),), **SMALL)
    _randomise_zero_weights(model, rng)
    clip = rng.normal(0, 1, (2, 4, 32, 32, 3)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(model(clip, training=True)))
    grads = tape.gradient(loss, model.trainable_weights)
    assert not [w.path for w, g in zip(model.trainable_weights, grads) if g is None]
    dead = [w.path for w, g in zip(model.trainable_weights, grads)
            if not w.path.endswith(ANALYTICALLY_ZERO_GRADIENT) and not np.any(np.asarray(g))]
    assert not dead, f"no gradient reaches {dead}"


def test_mixed_bfloat16_runs(rng):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = tsm_resnet50(5, attention="se+rnl", channel_gate_at=(("res3", 0),), **SMALL)
    _randomise_zero_weights(model, rng)
    clip = rng.normal(0, 1, (2, 4, 32, 32, 3)).astype("float32")
    logits = model(clip, training=False)
    assert logits.dtype == "float32" and np.all(np.isfinite(logits))
    rnl = model.get_layer("conv3_block1_sernl").rnl
    assert rnl.compute_dtype == "bfloat16" and rnl.theta.kernel.dtype == "float32"
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(clip, training=True))
    assert all(g is not None for g in tape.gradient(loss, model.trainable_weights))


def _tflite_run(model, clip):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], clip)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_tflite_builtins_match_keras(rng):
    """A model holding every block type converts with builtin ops only and matches Keras."""
    from rnl_keras.layers import (ChannelGate, NonLocal, RegionNonLocal, SEChain, SqueezeExcite,
                                  TemporalShift)

    inputs = keras.Input((4, 8, 8, 16), batch_size=1)
    x = TemporalShift(4)(inputs)
    for block in (RegionNonLocal(kernel_size=3, query_chunk_size=100),
                  RegionNonLocal(similarity="cosine", aggregation="max", kernel_size=3),
                  RegionNonLocal(similarity="dot", aggregation="avg", key_subsample=True),
                  NonLocal(subsample=True), SqueezeExcite(4, mode="scale"), ChannelGate(),
                  SEChain("se", se_reduction=4, kernel_size=3)):
        x = block(x)
    blocks = keras.Model(inputs, x)
    _randomise_zero_weights(blocks, rng)
    clip = rng.normal(0, 1, (1, 4, 8, 8, 16)).astype("float32")
    expected = np.asarray(blocks(clip, training=False))
    np.testing.assert_allclose(_tflite_run(blocks, clip), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())

    model = _every_block_model()
    _randomise_zero_weights(model, rng)
    clip = rng.normal(0, 1, (1, 4, 32, 32, 3)).astype("float32")
    expected = np.asarray(model(clip, training=False))
    np.testing.assert_allclose(_tflite_run(model, clip), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("kwargs, message", [
    ({"attention": "cbam"}, "attention"),
    ({"placement": (("res6", 0),)}, "placement"),
    ({"placement": (("res3", 4),)}, "placement"),
    ({"resnet_variant": "v2"}, "resnet_variant"),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tsm_resnet50(5, **{**SMALL, **kwargs})
