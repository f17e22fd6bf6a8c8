"""Run a trained model at another crop size: rebuild its graph at the new input, move the weights.

``train.py`` saves models with a fixed input ``(None, T, 224, 224, 3)``, but no weight depends on
the spatial size (convolutions, BatchNorm, the attention blocks' 1x1x1 / F_theta kernels and the
classifier are all size-free), so the paper's 256 x 256 test crops only need the same layers laid
out on a larger input. :func:`with_input_size` does that with ``keras.models.clone_model``: every
layer is re-created from its config (so any serialisable layer survives: custom attention blocks,
channel gates, fixed input adapters) and built at the new size, then every variable is copied from
the trained model, matched by its path (``conv1_conv/kernel``, ...).
"""
from __future__ import annotations

import numpy as np


class RebuildError(ValueError):
    """The model cannot be laid out at the requested input size."""


def input_geometry(model) -> tuple:
    """``(T, H, W)`` of the model's clip input (entries may be ``None``)."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 5 or shape[-1] not in (None, 3):
        raise RebuildError(f"model {model.name!r}: expected a (B, T, H, W, 3) clip input, got "
                           f"{shape}")
    return shape[1], shape[2], shape[3]


def _variables_by_path(model) -> dict:
    variables = {}
    for v in model.weights:
        if v.path in variables:
            raise RebuildError(f"model {model.name!r}: two variables share the path {v.path!r}")
        variables[v.path] = v
    return variables


def transfer_weights(source, target) -> int:
    """Copy every variable of ``source`` into the same-path variable of ``target``; returns count.

    Raises :class:`RebuildError` naming the first variable missing on either side or whose shape
    differs (nothing is copied then).
    """
    src, dst = _variables_by_path(source), _variables_by_path(target)
    missing = sorted(set(src) ^ set(dst))
    if missing:
        raise RebuildError(f"rebuilt model's variables differ from the trained model's, first: "
                           f"{missing[0]!r}")
    for path, v in src.items():
        if tuple(v.shape) != tuple(dst[path].shape):
            raise RebuildError(f"variable {path!r}: shape {tuple(v.shape)} in the trained model, "
                               f"{tuple(dst[path].shape)} after rebuilding")
    for path, v in src.items():
        dst[path].assign(np.asarray(v.numpy() if hasattr(v, "numpy") else v))
    return len(src)


def with_input_size(model, image_size: int):
    """``model`` itself when its input already takes ``image_size``, else a rebuilt copy.

    Args:
      model: a functional (or Sequential) Keras video classifier, input ``(B, T, H, W, 3)``.
      image_size: the square crop size S the copy takes.

    Returns:
      A model with input ``(None, T, S, S, 3)``, the same layers (names, configs) and weights.
    """
    import keras  # noqa: PLC0415

    t, h, w = input_geometry(model)
    s = int(image_size)
    if s < 1:
        raise RebuildError(f"image size must be >= 1, got {image_size}")
    if (h is None and w is None) or (h == s and w == s):
        return model
    clip = keras.Input((t, s, s, 3), name=model.inputs[0].name.split(":")[0] or "clip",
                       dtype=model.inputs[0].dtype)
    try:
        rebuilt = keras.models.clone_model(model, input_tensors=clip)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for graphs it cannot clone
        raise RebuildError(f"model {model.name!r} cannot be rebuilt at {s}x{s} "
                           f"({type(e).__name__}: {e})") from None
    transfer_weights(model, rebuilt)
    return rebuilt
