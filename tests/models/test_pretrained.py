"""ImageNet starts (issue 11 item 1) on small ResNets: torchvision state dicts (.npz, .pth in both
torch formats) against an independent float64 NumPy torchvision forward; refusals of files of the
wrong kind, layout or architecture (one error naming the file and the first bad tensor, nothing
assigned); the start record; the download path's dispatch (no network)."""
import hashlib

import keras
import numpy as np
import pytest

from rnl_keras.models import (PretrainedWeightsError, load_pretrained_weights, pretrained,
                              tsm_resnet50, weights_format, weights_record)
from tests.checkpoints import torch_writer
from tests.models import torchvision_reference as tv

BLOCKS, WIDTH, SIZE, T, K = (1, 1, 1, 1), 8, 64, 2, 10
SMALL = dict(num_frames=T, image_size=SIZE, attention="none", shift=False, stage_blocks=BLOCKS,
             base_width=WIDTH)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """A calibrated small torchvision-layout state dict (.npz) and the uint8 clip it was made on."""
    rng = np.random.default_rng(11)
    clip = rng.integers(0, 256, (1, T, SIZE, SIZE, 3), dtype=np.uint8)
    frames = tv.normalise_uint8(clip.reshape(-1, SIZE, SIZE, 3))
    sd = tv.calibrated_state_dict(rng, frames, num_classes=K, blocks=BLOCKS, width=WIDTH)
    path = tmp_path_factory.mktemp("tv") / "resnet_small.npz"
    np.savez(path, **sd)
    return sd, str(path), clip


def _normalised(clip):
    x = clip.astype(np.float32) / 255.0
    return ((x - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])).astype(
        np.float32)


def _expected_logits(sd, clip):
    frames = tv.normalise_uint8(clip.reshape(-1, SIZE, SIZE, 3))
    return tv.Net(sd).logits(frames, BLOCKS).reshape(clip.shape[0], T, -1).mean(axis=1)


@pytest.mark.parametrize("fmt", ["npz", "pth-zip", "pth-legacy"])
def test_torchvision_state_dict_matches_numpy_forward(small_file, tmp_path, fmt):
    sd, npz, clip = small_file
    path = npz
    if fmt != "npz":
        path = str(tmp_path / "resnet_small.pth")
        torch_writer.save({k: np.asarray(v) for k, v in sd.items()}, path,
                          legacy=fmt == "pth-legacy")
    model = tsm_resnet50(K, resnet_variant="torchvision", weights=path, **SMALL)
    assert model.get_layer("conv1_conv").bias is None
    assert model.get_layer("conv1_bn").epsilon == pytest.approx(1e-5)
    assert not any(l.name == "caffe_input" for l in model.layers)
    logits = np.asarray(model(_normalised(clip), training=False), np.float64)
    expected = _expected_logits(sd, clip)
    assert np.abs(expected).max() > 1.0                    # non-trivial logits
    np.testing.assert_allclose(logits, expected, rtol=0, atol=2e-4 * np.abs(expected).max())
    # the classifier came from the file: fc.weight (K, C) -> kernel (C, K)
    np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(), sd["fc.weight"].T)


def _snapshot(model):
    return [w.numpy().copy() for w in model.weights]


def _unchanged(model, before):
    return all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))


@pytest.mark.parametrize("problem", ["shape", "missing", "extra"])
def test_bad_tensor_is_named_and_nothing_is_assigned(small_file, tmp_path, problem):
    sd, _, _ = small_file
    bad = dict(sd)
    if problem == "shape":
        key = "layer3.0.conv2.weight"
        bad[key] = np.zeros((32, 32, 1, 1), "float32")
        pattern = rf"{key}.*expected shape \(32, 32, 3, 3\), got \(32, 32, 1, 1\)"
    elif problem == "missing":
        key = "layer2.0.bn3.running_var"
        del bad[key]
        pattern = rf"{key} is missing"
    else:                                                  # a deeper ResNet: an extra block
        key = "layer4.1.conv1.weight"
        bad[key] = np.zeros((64, 256, 1, 1), "float32")
        pattern = rf"{key}.*no counterpart"
    path = tmp_path / "bad.npz"
    np.savez(path, **bad)
    model = tsm_resnet50(K, resnet_variant="torchvision", **SMALL)
    before = _snapshot(model)
    with pytest.raises(PretrainedWeightsError, match=pattern) as info:
        load_pretrained_weights(model, str(path))
    assert str(path) in str(info.value)
    assert _unchanged(model, before)
    with pytest.raises(PretrainedWeightsError, match=key.replace(".", r"\.")):
        tsm_resnet50(K, resnet_variant="torchvision", weights=str(path), **SMALL)


def test_torchvision_file_into_keras_variant_is_refused(small_file):
    _, npz, _ = small_file
    with pytest.raises(PretrainedWeightsError,
                       match=r"torchvision ResNet-50 state dict.*resnet_variant='keras'.*"
                             r"resnet_variant='torchvision'.*--resnet_variant=torchvision"):
        tsm_resnet50(K, resnet_variant="keras", weights=npz, **SMALL)
    with pytest.raises(PretrainedWeightsError, match="input_convention='caffe'"):
        tsm_resnet50(K, resnet_variant="torchvision", weights=npz, input_convention="caffe",
                     **SMALL)
    with pytest.raises(PretrainedWeightsError, match="use_conv_bias=True"):
        tsm_resnet50(K, resnet_variant="torchvision", weights=npz, use_conv_bias=True, **SMALL)
    model = tsm_resnet50(K, resnet_variant="keras", **SMALL)        # into a built model too
    before = _snapshot(model)
    with pytest.raises(PretrainedWeightsError, match="resnet_variant='torchvision'"):
        load_pretrained_weights(model, npz)
    assert _unchanged(model, before)


def _small_keras_file(tmp_path, rng):
    """A keras-variant small model's weights in keras.applications' legacy .h5 layout."""
    import h5py

    model = tsm_resnet50(K, resnet_variant="keras", **SMALL)
    layers = [l for l in model.layers if l.weights and l.name != "fc"]
    path = tmp_path / "small_keras.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [l.name.encode() for l in layers]
        for layer in layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}" for w in layer.weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, w in zip(names, layer.weights):
                group.create_dataset(name, data=rng.normal(0, 0.1, w.shape).astype("float32"))
    return path


def test_keras_file_into_torchvision_variant_is_refused(tmp_path):
    path = _small_keras_file(tmp_path, np.random.default_rng(0))
    assert weights_format(path) == "keras"
    with pytest.raises(PretrainedWeightsError,
                       match=r"keras.applications ResNet-50.*resnet_variant='torchvision'.*"
                             r"--resnet_variant=keras"):
        tsm_resnet50(K, resnet_variant="torchvision", weights=str(path), **SMALL)
    with pytest.raises(PretrainedWeightsError, match="input_convention='caffe'"):
        tsm_resnet50(K, resnet_variant="keras", weights=str(path),
                     input_convention="torchvision", **SMALL)
    model = tsm_resnet50(K, resnet_variant="keras", weights=str(path), **SMALL)
    assert model.get_layer("caffe_input").__class__.__name__ == "CaffeInputAdapter"
    import h5py

    with h5py.File(path, "r") as f:                   # loaded by name, in layer.weights order
        for name in ("conv1_conv", "conv3_block1_0_bn", "conv5_block1_2_conv"):
            layer = model.get_layer(name)
            for w in layer.weights:
                np.testing.assert_array_equal(w.numpy(), f[f"{name}/{name}/{w.name}"][()])
    # rebuilt from its config, the model keeps its adapter (and so its convention)
    clone = keras.Model.from_config(model.get_config())
    assert [l.name for l in clone.layers][:2] == ["clip", "caffe_input"]


def test_weights_record(small_file, tmp_path):
    _, npz, _ = small_file
    assert weights_record(None) == {"start": "random"}
    assert weights_record("none") == {"start": "random"}
    record = weights_record(npz)
    with open(npz, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert record == {"start": "torchvision", "path": npz, "sha256": digest,
                      "bytes": len(open(npz, "rb").read())}
    loaded = load_pretrained_weights(tsm_resnet50(K, resnet_variant="torchvision", **SMALL), npz)
    assert loaded["classifier"] == "loaded" and loaded["sha256"] == digest
    other = tsm_resnet50(K + 1, resnet_variant="torchvision", **SMALL)   # different classifier
    assert load_pretrained_weights(other, npz)["classifier"] == "initialised"


def test_missing_and_unknown_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        tsm_resnet50(K, resnet_variant="torchvision", weights=str(tmp_path / "nope.pth"), **SMALL)
    text = tmp_path / "weights.txt"
    text.write_text("hello")
    with pytest.raises(PretrainedWeightsError, match="weights.txt"):
        tsm_resnet50(K, weights=str(text), **SMALL)


def test_imagenet_download_dispatch(monkeypatch, tmp_path):
    """weights="imagenet" asks keras.utils.get_file for the variant's file (never downloads
    here) and checks the torchvision file's SHA-256 prefix."""
    calls = []
    fake = tmp_path / "resnet50-0676ba61.pth"
    fake.write_bytes(b"not the real weights")

    def get_file(fname, origin, **kwargs):
        calls.append((fname, origin, kwargs.get("file_hash")))
        return str(fake)

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    with pytest.raises(PretrainedWeightsError, match="SHA-256 does not start with 0676ba61"):
        pretrained.imagenet_weights_path("torchvision")
    assert calls[-1][1] == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    pretrained.imagenet_weights_path("keras", include_top=True)
    assert calls[-1][0] == "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    assert calls[-1][2] == "2cb95161c43110f7111970584f804107"
    pretrained.imagenet_weights_path("keras", include_top=False)
    assert calls[-1][0].endswith("_notop.h5")


def test_keras_file_of_another_architecture_names_the_first_tensor(tmp_path):
    path = _small_keras_file(tmp_path, np.random.default_rng(1))       # base width 8
    wider = dict(SMALL, base_width=16)
    model = tsm_resnet50(K, resnet_variant="keras", input_convention="caffe", **wider)
    before = _snapshot(model)
    with pytest.raises(PretrainedWeightsError,
                       match=r"small_keras\.h5.*first mismatching tensor conv1_conv\[0\] "
                             r"\(kernel\): expected shape \(7, 7, 3, 16\), got \(7, 7, 3, 8\)"):
        load_pretrained_weights(model, str(path))
    assert _unchanged(model, before)


def test_own_model_weights_file_is_not_taken_for_keras_applications(tmp_path):
    """A Keras 3 .weights.h5 of a tsm_resnet50 addresses layers by class and position, in an
    order that is not keras.applications' (conv2_block1_0 / _3 convs have the same shape): it
    must be refused, not loaded in the wrong places."""
    model = tsm_resnet50(K, resnet_variant="keras", **SMALL)
    path = tmp_path / "own.weights.h5"
    model.save_weights(path)
    with pytest.raises(PretrainedWeightsError, match=r"own\.weights\.h5.*no counterpart in "
                                                     r"keras\.applications ResNet50"):
        tsm_resnet50(K, resnet_variant="keras", weights=str(path), **SMALL)


def test_pth_with_code_is_refused_as_a_weights_error(tmp_path):
    """tsm_resnet50(weights=<.pth whose pickle runs code>): one PretrainedWeightsError naming the
    file and --trust_pickled_code; the code never runs."""
    import os

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "resnet50.pth"
    torch_writer.save({"conv1.weight": np.zeros((8, 3, 7, 7), "float32"), "x": Payload()}, path)
    with pytest.raises(PretrainedWeightsError, match=r"resnet50\.pth.*--trust_pickled_code"):
        tsm_resnet50(K, resnet_variant="torchvision", weights=str(path), **SMALL)
    assert not marker.exists()
