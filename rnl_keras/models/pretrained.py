"""ImageNet ResNet-50 starts for ``tsm_resnet50``: torchvision state dicts and keras.applications files.

Two kinds of file, each with its own layout and input convention (see ``docs/fidelity.md``):

* ``"torchvision"``: a torchvision ResNet-50 state dict (``conv1.weight``, ``bn1.*``,
  ``layer{1..4}.{i}.conv{1,2,3}.weight``, ``bn{1,2,3}.*``, ``downsample.{0,1}.*``, ``fc.*``;
  ``num_batches_tracked`` ignored) as a ``.pth`` / ``.pt`` (read by the allow-list unpickler of
  :mod:`rnl_keras.checkpoints.torch_pickle`, no torch needed, no code run) or an ``.npz`` of its
  arrays. Needs ``resnet_variant="torchvision"`` (stride in the 3x3 conv, v1.5), no conv biases,
  BN eps 1e-5, and the torchvision input convention (RGB ``(x/255 - mean)/std``) that the data
  pipeline feeds. This is the paper's (and TSM's, and the release's) start.
* ``"keras"``: a ``keras.applications`` ResNet-50 weights file, with or without top, in the
  legacy ``.h5`` layout (the ImageNet download) or Keras 3's ``.weights.h5``. Needs
  ``resnet_variant="keras"`` (stride in the first 1x1 conv), conv biases, and
  ``input_convention="caffe"``: the model then starts with a fixed
  :class:`~rnl_keras.models.input_adapter.CaffeInputAdapter`, so it still takes the pipeline's
  RGB mean/std input.

Every tensor is read and checked (name, shape) before any is assigned: a wrong file raises one
:class:`PretrainedWeightsError` naming the file and the first mismatching tensor, and leaves the
model untouched. The classifier ``fc`` is loaded too when the file has one of the model's shape
(an ImageNet file into a ``num_classes=1000`` model); otherwise it keeps its initialisation.
"""
from __future__ import annotations

import hashlib
import os
import re
import zipfile

import numpy as np

from rnl_keras.models.input_adapter import input_convention_of
from rnl_keras.models.keras_resnet50_file import PretrainedWeightsError, read_keras_resnet50_file

KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
KERAS_IMAGENET_FILES = {   # include_top -> (file name, md5: keras.applications.resnet's hashes)
    True: ("resnet50_weights_tf_dim_ordering_tf_kernels.h5", "2cb95161c43110f7111970584f804107"),
    False: ("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "4d473c1dd8becc155b73f8504c6f6626"),
}
# torchvision's ResNet50_Weights.IMAGENET1K_V1 (the original weights TSM starts from); the name
# carries the first 8 hex digits of the file's SHA-256, which torch.hub checks and so do we.
TORCHVISION_IMAGENET_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
KINDS = ("torchvision", "keras")
_BLOCK_LAYER = re.compile(r"conv([2-5])_block(\d+)_([0-3])_(conv|bn)")


# ------------------------------------------------------------------------------ file kinds
def is_random_start(weights) -> bool:
    """True for ``None``, ``""``, ``"none"`` and ``"random"`` (any case)."""
    return weights is None or str(weights).strip().lower() in ("", "none", "random")


def weights_format(path) -> str:
    """``"torchvision"`` or ``"keras"``, from the file's content (HDF5, zip, pickle)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights={path!r}: no such file (expected a torchvision "
                                "ResNet-50 state dict .pth/.npz or a keras.applications "
                                "ResNet-50 .h5 / .weights.h5)")
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        return "keras"
    if head.startswith(b"PK"):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n.endswith("data.pkl") for n in names) or all(n.endswith(".npy") for n in names):
            return "torchvision"
        raise PretrainedWeightsError(f"weights={path!r}: a zip file that is neither a torch.save "
                                     "archive nor an .npz of arrays (a .keras model? pass its "
                                     "weights as .weights.h5)")
    if head[:1] == b"\x80":
        return "torchvision"
    raise PretrainedWeightsError(f"weights={path!r}: not a weights file this package reads "
                                 "(HDF5 .h5, torch .pth/.pt, or .npz)")


def imagenet_weights_path(resnet_variant: str, include_top: bool = True) -> str:
    """Download (once, into Keras' cache) the ImageNet ResNet-50 file for ``resnet_variant``.

    ``"keras"``: keras.applications' file (with top when ``include_top``); ``"torchvision"``:
    torchvision's IMAGENET1K_V1 state dict. Needs network; never used by tests or the demo.
    """
    import keras

    if resnet_variant == "keras":
        name, md5 = KERAS_IMAGENET_FILES[bool(include_top)]
        return keras.utils.get_file(name, KERAS_BASE_URL + name, cache_subdir="models",
                                    file_hash=md5)
    name = TORCHVISION_IMAGENET_URL.rsplit("/", 1)[1]
    path = keras.utils.get_file(name, TORCHVISION_IMAGENET_URL, cache_subdir="models")
    prefix = name.rsplit("-", 1)[1].split(".")[0]
    if not sha256_of(path).startswith(prefix):
        raise PretrainedWeightsError(f"{path!r}: SHA-256 does not start with {prefix} as the "
                                     f"download {TORCHVISION_IMAGENET_URL} should; delete it and "
                                     "retry")
    return path


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_record(weights, resnet_variant: str = "keras", num_classes: int = 1000,
                   include_top: bool = True) -> dict:
    """What a run started from, for ``summary.json``.

    Args:
        weights: as given to ``tsm_resnet50(weights=...)``.
        resnet_variant, num_classes, include_top: the model's, for ``"imagenet"`` only (which
            file ``tsm_resnet50`` downloaded: it is in Keras' cache once the model is built).
    Returns:
        ``{"start": "random"}``, or ``{"start": "torchvision" | "keras", "path": absolute path,
        "sha256": hex digest, "bytes": size}`` (plus ``"source": "imagenet"`` for the download).
    """
    if is_random_start(weights):
        return {"start": "random"}
    source = None
    if str(weights).strip().lower() == "imagenet":
        source = "imagenet"
        weights = imagenet_weights_path(resnet_variant, include_top and int(num_classes) == 1000)
    path = os.path.abspath(os.fspath(weights))
    record = {"start": weights_format(path), "path": path, "sha256": sha256_of(path),
              "bytes": os.path.getsize(path)}
    if source:
        record["source"] = source
    return record


# ------------------------------------------------------------------------------ reading
def read_torchvision_state_dict(path, trust_pickled_code=False) -> dict:
    """{key: array} of a torchvision state dict file (``module.`` prefixes dropped)."""
    from rnl_keras.checkpoints import CheckpointError, UnsafeCheckpointError, load_torch_state_dict

    try:
        state = load_torch_state_dict(path, trust_pickled_code=trust_pickled_code)
    except (UnsafeCheckpointError, CheckpointError) as err:    # refused pickle, not a state dict
        raise PretrainedWeightsError(f"weights={os.fspath(path)!r}: {err}") from None
    return {(k[len("module."):] if k.startswith("module.") else k): np.asarray(v)
            for k, v in state.items()}


# ------------------------------------------------------------------------------ matching
class _Target:
    """One model variable and the file tensor that sets it."""

    def __init__(self, name, variable, file_shape, convert, optional=False):
        self.name, self.variable, self.file_shape = name, variable, tuple(file_shape)
        self.convert, self.optional = convert, optional


def _bn_names(prefix):
    return [f"{prefix}.{n}" for n in ("weight", "bias", "running_mean", "running_var")]


def _torch_name(layer_name):
    """torchvision key prefix of a backbone layer (``conv3_block2_1_conv`` -> ``layer2.1.conv1``)."""
    if layer_name in ("conv1_conv", "conv1_bn"):
        return "conv1" if layer_name == "conv1_conv" else "bn1"
    stage, block, part, what = _BLOCK_LAYER.fullmatch(layer_name).groups()
    base = f"layer{int(stage) - 1}.{int(block) - 1}"
    if part == "0":
        return f"{base}.downsample.{0 if what == 'conv' else 1}"
    return f"{base}.{'conv' if what == 'conv' else 'bn'}{part}"


def _backbone_layers(model):
    return [l for l in model.layers
            if l.name in ("conv1_conv", "conv1_bn") or _BLOCK_LAYER.fullmatch(l.name)]


def torchvision_targets(model) -> list:
    """Targets of a torchvision state dict in ``model`` (backbone, then the optional ``fc``)."""
    targets = []
    for layer in _backbone_layers(model):
        prefix = _torch_name(layer.name)
        if layer.name.endswith("_conv"):
            kh, kw, i, o = layer.kernel.shape
            targets.append(_Target(f"{prefix}.weight", layer.kernel, (o, i, kh, kw),
                                   lambda a: np.transpose(a, (2, 3, 1, 0))))
        else:
            c = layer.gamma.shape[0]
            variables = (layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance)
            targets += [_Target(n, v, (c,), np.asarray) for n, v in zip(_bn_names(prefix),
                                                                         variables)]
    fc = _classifier(model)
    if fc is not None:
        i, o = fc.kernel.shape
        targets += [_Target("fc.weight", fc.kernel, (o, i), np.transpose, optional=True),
                    _Target("fc.bias", fc.bias, (o,), np.asarray, optional=True)]
    return targets


def keras_targets(model) -> list:
    """Targets of a keras.applications ResNet-50 file in ``model`` (layer/index names)."""
    targets = []
    for layer in _backbone_layers(model):
        for index, variable in enumerate(layer.weights):
            targets.append(_Target(f"{layer.name}[{index}] ({variable.name})", variable,
                                   variable.shape, np.asarray))
    fc = _classifier(model)
    if fc is not None:
        targets += [_Target(f"predictions[{i}] ({v.name})", v, v.shape, np.asarray, optional=True)
                    for i, v in enumerate((fc.kernel, fc.bias))]
    return targets


def _classifier(model):
    try:
        return model.get_layer("fc")
    except ValueError:
        return None


def _keras_file_tensors(layers: dict) -> dict:
    """Flatten {layer: [arrays]} to the target names of :func:`keras_targets`."""
    return {f"{name}[{index}]": array for name, arrays in layers.items()
            for index, array in enumerate(arrays)}


def _match(path, targets, tensors, ignored=()):
    """[(variable, value)] for every target; raise on the first missing / mis-shaped tensor."""
    assignments, used = [], set()
    for target in targets:
        key = target.name.split(" ")[0]
        if key not in tensors:
            if target.optional:
                continue
            raise PretrainedWeightsError(
                f"weights={path!r}: tensor {key} is missing (expected shape {target.file_shape}); "
                "not a ResNet-50 file of this layout")
        array = np.asarray(tensors[key])
        if tuple(array.shape) != target.file_shape:
            if target.optional:     # e.g. the 1000-class ImageNet head into a K-class model
                continue
            raise PretrainedWeightsError(
                f"weights={path!r}: first mismatching tensor {target.name}: expected shape "
                f"{target.file_shape}, got {tuple(array.shape)} (wrong architecture or layout)")
        if not np.issubdtype(array.dtype, np.floating):
            raise PretrainedWeightsError(f"weights={path!r}: tensor {key} has dtype "
                                         f"{array.dtype}, expected floating point")
        assignments.append((target.variable, target.convert(array.astype(np.float64))))
        used.add(key)
    extra = sorted(k for k in tensors if k not in used and not k.endswith(ignored)
                   and not k.startswith(("fc.", "predictions[")))
    if extra:
        raise PretrainedWeightsError(
            f"weights={path!r}: tensor {extra[0]} (shape {tuple(np.shape(tensors[extra[0]]))}) "
            f"has no counterpart in the model ({len(extra)} such tensors: a deeper ResNet, or a "
            "model built with smaller stage_blocks / base_width?)")
    return assignments


# ------------------------------------------------------------------------------ model fit
REQUIRED = {  # what each kind of file needs of the model, and how to ask for it
    "torchvision": {"resnet_variant": "torchvision", "use_conv_bias": False, "bn_epsilon": 1e-5,
                    "input_convention": "torchvision"},
    "keras": {"resnet_variant": "keras", "use_conv_bias": True, "bn_epsilon": 1.001e-5,
              "input_convention": "caffe"},
}
_DESCRIBE = {
    "torchvision": "a torchvision ResNet-50 state dict (v1.5: stride in the 3x3 conv, no conv "
                   "biases, BN eps 1e-5, RGB (x/255 - mean)/std input)",
    "keras": "a keras.applications ResNet-50 weights file (stride in the first 1x1 conv, conv "
             "biases, BN eps 1.001e-5, Caffe BGR 0-255 mean-subtracted input)",
}


def model_settings(model) -> dict:
    """The :data:`REQUIRED` settings a built ``tsm_resnet50`` has."""
    try:
        first_block = model.get_layer("conv3_block1_1_conv")
        conv1, bn1 = model.get_layer("conv1_conv"), model.get_layer("conv1_bn")
    except ValueError:
        raise PretrainedWeightsError(f"model {model.name!r} has no ResNet backbone layers "
                                     "(conv1_conv, conv3_block1_1_conv, ...)") from None
    return {"resnet_variant": "keras" if tuple(first_block.strides) == (2, 2) else "torchvision",
            "use_conv_bias": conv1.bias is not None, "bn_epsilon": float(bn1.epsilon),
            "input_convention": input_convention_of(model)}


def check_settings(kind: str, settings: dict, path) -> None:
    """Refuse, naming every argument to change, a model whose settings do not fit ``kind``."""
    wrong = []
    for arg, want in REQUIRED[kind].items():
        have = settings.get(arg)
        same = abs(have - want) < 1e-12 if arg == "bn_epsilon" else have == want
        if not same:
            wrong.append((arg, have, want))
    if wrong:
        got = ", ".join(f"{a}={h!r}" for a, h, _ in wrong)
        fix = ", ".join(f"{a}={w!r}" for a, _, w in wrong)
        raise PretrainedWeightsError(
            f"weights={os.fspath(path)!r} is {_DESCRIBE[kind]}, but the model has {got}. Build it "
            f"with {fix} (train.py: --resnet_variant={REQUIRED[kind]['resnet_variant']}; the "
            "other settings follow from resnet_variant and the weights file when left unset).")


def load_pretrained_weights(model, weights, trust_pickled_code=False) -> dict:
    """Set ``model``'s ResNet-50 backbone (and ``fc`` when it fits) from an ImageNet file.

    Args:
        model: a ``tsm_resnet50`` (any attention; full ResNet-50 depth and width).
        weights: path of a torchvision state dict (``.pth`` / ``.pt`` / ``.npz``) or of a
            keras.applications ResNet-50 ``.h5`` / ``.weights.h5`` (with or without top).
        trust_pickled_code: DANGEROUS, for ``.pth`` files whose pickle holds more than tensors
            (see :func:`rnl_keras.checkpoints.read_torch_file`).
    Returns:
        :func:`weights_record` of the file plus ``"classifier": "loaded" | "initialised"`` and
        ``"tensors"``: the number of arrays set.
    Raises:
        PretrainedWeightsError: the file does not fit (kind vs the model's settings, or the first
            missing / mis-shaped tensor); nothing has been assigned then.
    """
    path = os.fspath(weights)
    kind = weights_format(path)
    check_settings(kind, model_settings(model), path)
    if kind == "torchvision":
        tensors = read_torchvision_state_dict(path, trust_pickled_code)
        assignments = _match(path, torchvision_targets(model), tensors, ("num_batches_tracked",))
    else:
        tensors = _keras_file_tensors(read_keras_resnet50_file(path))
        assignments = _match(path, keras_targets(model), tensors)
    fc = _classifier(model)
    fc_loaded = fc is not None and any(v is fc.kernel for v, _ in assignments)
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    record = weights_record(path)
    record.update(classifier="loaded" if fc_loaded else "initialised", tensors=len(assignments))
    return record
