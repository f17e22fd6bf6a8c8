"""Issue 11 item 1 end to end: a TSM-ResNet50 started from an ImageNet ResNet-50 file, with the
file's 1000-class classifier, exported, is that ImageNet classifier averaged over frames.

For a 224x224 clip of uint8 frames (T = 2, no temporal shift, no attention), the SavedModel's
``serving_default`` probabilities must equal softmax(mean over frames of the ORIGINAL network's
logits on its OWN preprocessing of the same frames):

(a) torchvision ResNet-50 state dict (.pth, read by the safe unpickler): the original is an
    independent float64 NumPy forward of torchvision's ResNet-50 v1.5 on ToTensor + Normalize;
(b) keras.applications ResNet-50 weights (.weights.h5, and the legacy .h5 layout of the ImageNet
    download, with and without top): the original is keras.applications.ResNet50 on
    keras.applications.resnet50.preprocess_input (Caffe: BGR, 0-255, mean subtracted).

The weights are random (no download), with BatchNorm statistics calibrated on the clip and the
classifier scaled so the probabilities are far from uniform and from one-hot.
"""
import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.export import export_model, synthetic_clips
from rnl_keras.models import load_pretrained_weights, tsm_resnet50
from rnl_keras.models.keras_resnet50_file import keras_resnet50_layer_order
from tests.checkpoints import torch_writer
from tests.models import torchvision_reference as tv

T, S, K = 2, 224, 1000
TOLERANCE = 1e-5          # max |probability difference|, float32 model vs the original


@pytest.fixture(scope="module")
def clip():
    return synthetic_clips(1, T, S, S, seed=3)                 # uint8 (1, T, 224, 224, 3)


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    path = tmp_path_factory.mktemp("labels") / "imagenet.txt"
    path.write_text("\n".join(f"class_{i:04d}" for i in range(K)) + "\n")
    return str(path)


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _served_probabilities(model, clip, labels, export_dir):
    report = export_model(model, str(export_dir), "imagenet", labels, tflite=False,
                          parity_clips=clip, resize_shorter=S, log=lambda *_: None)
    served = tf.saved_model.load(report["files"]["saved_model"])
    out = served.signatures["serving_default"](frames=tf.constant(clip))
    return out["probabilities"].numpy().astype(np.float64)


def _check(probs, expected, what):
    diff = float(np.abs(probs - expected).max())
    print(f"\n{what}: max |prob diff| = {diff:.2e} (max prob {expected.max():.3f}, "
          f"top-1 {int(expected.argmax())})")
    assert 0.01 < expected.max() < 0.9               # neither uniform (0.001) nor one-hot
    assert probs.argmax() == expected.argmax()
    assert diff < TOLERANCE


def test_torchvision_start_is_the_imagenet_classifier(clip, labels, tmp_path):
    rng = np.random.default_rng(0)
    frames = tv.normalise_uint8(clip.reshape(-1, S, S, 3))        # ToTensor + Normalize, float64
    sd = tv.calibrated_state_dict(rng, frames, num_classes=K)
    expected = _softmax(tv.Net(sd).logits(frames).reshape(1, T, K).mean(axis=1))
    path = tmp_path / "resnet50_torchvision.pth"
    torch_writer.save({k: np.asarray(v) for k, v in sd.items()}, path)
    model = tsm_resnet50(K, num_frames=T, image_size=S, attention="none", shift=False,
                         resnet_variant="torchvision", weights=str(path))
    probs = _served_probabilities(model, clip, labels, tmp_path / "saved")
    _check(probs, expected, "(a) torchvision .pth")


def _calibrated_keras_resnet50(x_caffe, rng):
    """keras.applications.ResNet50 (logits head) with BN statistics from ``x_caffe``, random
    affine BN parameters and the head scaled to logits of std ~3."""
    reference = keras.applications.ResNet50(weights=None, classifier_activation=None)
    bns = [l for l in reference.layers if isinstance(l, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0                   # one training pass sets moving stats = batch stats
    reference(x_caffe, training=True)
    for layer in bns:
        c = layer.gamma.shape[0]
        layer.momentum = 0.99
        layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
        layer.beta.assign(rng.normal(0, 0.1, c).astype("float32"))
        layer.moving_variance.assign(layer.moving_variance.numpy()
                                     * rng.uniform(0.8, 1.25, c).astype("float32"))
    head = reference.get_layer("predictions")
    kernel = rng.normal(0, 1, head.kernel.shape).astype("float32")
    bias = rng.normal(0, 0.1, head.bias.shape).astype("float32")
    head.set_weights([kernel, bias])
    logits = np.asarray(reference(x_caffe, training=False))
    head.set_weights([kernel * 3.0 / logits.std(), bias * 3.0 / logits.std()])
    return reference


def _legacy_files(reference, tmp_path):
    """The reference's weights in the legacy .h5 layout, with top and without (the download's)."""
    from keras.src.legacy.saving import legacy_h5_format

    top, notop = tmp_path / "legacy.h5", tmp_path / "legacy_notop.h5"
    with h5py.File(top, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    with h5py.File(top, "r") as src, h5py.File(notop, "w") as dst:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in src.attrs["layer_names"]]
        names = [n for n in names if n != "predictions"]
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        dst.attrs["layer_names"] = [n.encode() for n in names]
        for name in names:
            src.copy(src[name], dst, name=name)
    return str(top), str(notop)


def test_keras_start_is_the_imagenet_classifier(clip, labels, tmp_path):
    rng = np.random.default_rng(1)
    frames = clip.reshape(-1, S, S, 3).astype(np.float32)
    x_caffe = keras.applications.resnet50.preprocess_input(frames.copy())
    reference = _calibrated_keras_resnet50(x_caffe, rng)
    assert [l.name for l in reference.layers if l.weights] == keras_resnet50_layer_order()
    logits = np.asarray(reference(x_caffe, training=False), np.float64)
    expected = _softmax(logits.reshape(1, T, K).mean(axis=1))
    path = tmp_path / "resnet50.weights.h5"
    reference.save_weights(path)
    model = tsm_resnet50(K, num_frames=T, image_size=S, attention="none", shift=False,
                         resnet_variant="keras", weights=str(path))
    assert model.layers[1].name == "caffe_input"
    probs = _served_probabilities(model, clip, labels, tmp_path / "saved")
    _check(probs, expected, "(b) keras.applications .weights.h5")

    # the legacy layout of the ImageNet download sets the very same values, with or without top
    top, notop = _legacy_files(reference, tmp_path)
    values = {w.path: w.numpy() for w in model.weights}
    for w in model.weights:
        w.assign(np.zeros(w.shape, w.dtype))
    assert load_pretrained_weights(model, top)["classifier"] == "loaded"
    assert all(np.array_equal(values[w.path], w.numpy()) for w in model.weights)
    record = load_pretrained_weights(model, notop)
    assert record["classifier"] == "initialised" and record["start"] == "keras"
    assert record["tensors"] == len(model.weights) - 2


def test_torchvision_file_records_sha(tmp_path):
    """The trainer's summary.json record names the file and its digest (fast, no model)."""
    from rnl_keras.models import weights_record

    path = tmp_path / "w.npz"
    np.savez(path, x=np.zeros(3))
    record = weights_record(str(path))
    assert record["start"] == "torchvision" and record["path"] == os.path.abspath(path)
    assert len(record["sha256"]) == 64
