"""Read a keras.applications ResNet-50 weights file (``.h5`` / ``.weights.h5``) with h5py.

Two layouts exist. The legacy one (the ImageNet downloads, Keras 2's ``save_weights``) names
every layer (``layer_names`` attribute; per layer, ``weight_names`` in ``layer.weights`` order).
Keras 3's ``.weights.h5`` names layers only by class and position in ``model.layers``
(``layers/conv2d_5/vars/0``): the k-th Conv2D of the file is the k-th Conv2D of
keras.applications.ResNet50, whose order :func:`keras_resnet50_layer_order` spells out (pinned to
keras.applications by tests/export/test_imagenet_parity.py).
"""
import numpy as np

RESNET50_BLOCKS = (3, 4, 6, 3)


class PretrainedWeightsError(ValueError):
    """A weights file that does not fit the model (or is not a ResNet-50 weights file)."""


def keras_resnet50_layer_order(include_top: bool = True) -> list:
    """Names of keras.applications.ResNet50's layers with weights, in ``model.layers`` order
    (Keras 3's ``.weights.h5`` addresses them by per-class position in that order; pinned to
    keras.applications by a test)."""
    names = ["conv1_conv", "conv1_bn"]
    for stage, blocks in zip(range(2, 6), RESNET50_BLOCKS):
        for block in range(1, blocks + 1):
            p = f"conv{stage}_block{block}"
            names += [f"{p}_1_conv", f"{p}_1_bn", f"{p}_2_conv", f"{p}_2_bn"]
            names += ([f"{p}_0_conv", f"{p}_3_conv", f"{p}_0_bn", f"{p}_3_bn"] if block == 1
                      else [f"{p}_3_conv", f"{p}_3_bn"])
    return names + (["predictions"] if include_top else [])


def read_keras_resnet50_file(path) -> dict:
    """{keras.applications layer name: [arrays in ``layer.weights`` order]} of an .h5 file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" in root.attrs:
                return _read_legacy_h5(root)
            if "layers" in root:
                return _read_keras3_h5(root["layers"], path)
    except OSError as err:
        raise PretrainedWeightsError(f"weights={path!r}: unreadable HDF5 file ({err})") from None
    raise PretrainedWeightsError(f"weights={path!r}: an HDF5 file but not Keras weights (no "
                                 "layer_names attribute, no layers group)")


def _read_legacy_h5(root) -> dict:
    out = {}
    for name in root.attrs["layer_names"]:
        name = name.decode("utf8") if isinstance(name, bytes) else str(name)
        group = root[name]
        weight_names = [w.decode("utf8") if isinstance(w, bytes) else str(w)
                        for w in group.attrs.get("weight_names", [])]
        if weight_names:
            out[name] = [np.asarray(group[w]) for w in weight_names]
    return out


_KERAS_RESNET50_CLASSES = ("input_layer", "zero_padding2d", "conv2d", "batch_normalization",
                           "activation", "max_pooling2d", "add", "global_average_pooling2d",
                           "global_max_pooling2d", "dense")


def _read_keras3_h5(layers, path) -> dict:
    """Keras 3 names layers by class and position (``conv2d_5``): the k-th Conv2D of the file is
    the k-th of :func:`keras_resnet50_layer_order`; a layer class keras.applications' ResNet50
    does not have means another model's file, refused (its order would not be ResNet50's)."""
    order = keras_resnet50_layer_order()
    known = {"conv2d": [n for n in order if n.endswith("_conv")],
             "batch_normalization": [n for n in order if n.endswith("_bn")],
             "dense": ["predictions"]}
    out = {}
    for group_name in layers:
        cls, _, index = group_name.rpartition("_")
        cls, index = (cls, int(index)) if index.isdigit() else (group_name, 0)
        if cls not in _KERAS_RESNET50_CLASSES or (cls in known and index >= len(known[cls])):
            raise PretrainedWeightsError(
                f"weights={path!r}: layers/{group_name} has no counterpart in keras.applications "
                "ResNet50: not its weights file (a tsm_resnet50's own weights? restore those with "
                "model.load_weights)")
        variables = layers[group_name].get("vars")
        if cls in known and variables is not None and len(variables):
            out[known[cls][index]] = [np.asarray(variables[str(i)]) for i in range(len(variables))]
    return out
