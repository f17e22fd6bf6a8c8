"""Serving-time preprocessing: the test-time transform in the exported graph, and its NumPy twin.

The graph side is :func:`rnl_keras.data.eval_transform.eval_transform` with one (centre) crop, the
same function the evaluation pipeline runs: uint8 RGB frames of any size -> resize the shorter side
to ``resize_shorter`` (bilinear, half-pixel centres, no antialiasing: ``tf.image.resize``) -> the
centre ``image_size`` x ``image_size`` crop -> ImageNet mean / std on [0, 1]. ``resize_shorter``
defaults to :func:`rnl_keras.data.eval_transform.default_resize_shorter` (``S * 256 // 224``: 256
for S = 224, TSM's 1-crop test view).

:func:`preprocess_frames_np` is the only NumPy copy, for TFLite clients and the ``serving_float``
client; it matches the graph to float32 rounding (``tests/export/test_eval_transform.py``).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from rnl_keras.data.eval_transform import default_resize_shorter, eval_transform, resized_shape
from rnl_keras.imagenet import IMAGENET_MEAN, IMAGENET_STD


# ----------------------------------------------------------------------------- TensorFlow


def resized_shape_tf(height, width, size: int):
    """(new_h, new_w) int32 tensors with the shorter side ``size`` (never below ``size``)."""
    return resized_shape(height, width, size)


def preprocess_frames_tf(frames, image_size: int, resize_shorter: int | None = None) -> tf.Tensor:
    """uint8 (or [0, 255] float) ``(B, T, H, W, 3)`` -> float32 ``(B, T, S, S, 3)`` normalised.

    The test-time transform with one centre crop per clip (:func:`eval_transform`).
    """
    r = int(resize_shorter or default_resize_shorter(image_size))
    return eval_transform(frames, int(image_size), r, crops=1)


# ----------------------------------------------------------------------------- NumPy


def resized_shape_np(height: int, width: int, size: int) -> tuple[int, int]:
    """NumPy twin of :func:`resized_shape_tf` (same float32 arithmetic, round half to even)."""
    h, w = np.float32(height), np.float32(width)
    scale = np.float32(size) / np.minimum(h, w)
    new_h = max(int(np.round(np.float32(h * scale))), size)
    new_w = max(int(np.round(np.float32(w * scale))), size)
    return new_h, new_w


def _axis_weights(in_size: int, out_size: int):
    """Lower / upper source indices and lerp weights of TF's half-pixel-centre bilinear resize."""
    scale = np.float32(in_size) / np.float32(out_size)
    pos = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(pos)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(pos), in_size - 1).astype(np.int64)
    lerp = (pos - floor).astype(np.float32)
    return lower, upper, lerp


def resize_bilinear_np(images: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """``tf.image.resize(images, (new_h, new_w), "bilinear")`` in NumPy; (..., H, W, C) -> float32."""
    x = np.asarray(images, dtype=np.float32)
    h, w = x.shape[-3], x.shape[-2]
    if (h, w) == (new_h, new_w):
        return x.copy()
    ylo, yhi, yl = _axis_weights(h, new_h)
    xlo, xhi, xl = _axis_weights(w, new_w)
    top = np.take(x, ylo, axis=-3)
    bottom = np.take(x, yhi, axis=-3)
    yl = yl[:, None, None]
    tl, tr = np.take(top, xlo, axis=-2), np.take(top, xhi, axis=-2)
    bl, br = np.take(bottom, xlo, axis=-2), np.take(bottom, xhi, axis=-2)
    xl = xl[:, None]
    top_row = tl + (tr - tl) * xl
    bottom_row = bl + (br - bl) * xl
    return (top_row + (bottom_row - top_row) * yl).astype(np.float32)


def preprocess_frames_np(frames: np.ndarray, image_size: int,
                         resize_shorter: int | None = None) -> np.ndarray:
    """NumPy twin of :func:`preprocess_frames_tf`: ``(..., H, W, 3)`` uint8 -> ``(..., S, S, 3)``.

    ``resize_shorter`` defaults to :func:`default_resize_shorter` (``S * 256 // 224``), as in TF.

    Crops only the rows / columns that survive the centre crop after resizing, so it is cheap on
    full-resolution frames.
    """
    frames = np.asarray(frames)
    if frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"expected (..., H, W, 3) RGB frames, got shape {frames.shape}")
    resize_shorter = int(resize_shorter or default_resize_shorter(image_size))
    s = int(image_size)
    if resize_shorter < s:
        raise ValueError(f"resize_shorter={resize_shorter} must be >= the crop size {s}")
    h, w = frames.shape[-3], frames.shape[-2]
    if h < 1 or w < 1:
        raise ValueError(f"frames of shape {frames.shape}: height and width must be >= 1")
    new_h, new_w = resized_shape_np(h, w, resize_shorter)
    y0, x0 = (new_h - s) // 2, (new_w - s) // 2
    # Resize only the window that is kept: same weights as the full resize, restricted.
    x = np.asarray(frames, dtype=np.float32)
    ylo, yhi, yl = (a[y0:y0 + s] for a in _axis_weights(h, new_h))
    xlo, xhi, xl = (a[x0:x0 + s] for a in _axis_weights(w, new_w))
    if (h, w) == (new_h, new_w):
        out = x[..., y0:y0 + s, x0:x0 + s, :]
    else:
        top, bottom = np.take(x, ylo, axis=-3), np.take(x, yhi, axis=-3)
        yl = yl[:, None, None]
        xl = xl[:, None]
        tl, tr = np.take(top, xlo, axis=-2), np.take(top, xhi, axis=-2)
        bl, br = np.take(bottom, xlo, axis=-2), np.take(bottom, xhi, axis=-2)
        top_row = tl + (tr - tl) * xl
        bottom_row = bl + (br - bl) * xl
        out = top_row + (bottom_row - top_row) * yl
    out = out / np.float32(255.0)
    out = (out - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return out.astype(np.float32)


def tsn_center_indices(num_video_frames: int, num_frames: int) -> np.ndarray:
    """TSN test sampling (segment centres, ``int(tick / 2 + tick * i)``): the eval pipeline's
    ``rnl_keras.data.sampling.tsn_eval_indices`` with one clip, as a NumPy array."""
    from rnl_keras.data.sampling import tsn_eval_indices

    return tsn_eval_indices(int(num_video_frames), int(num_frames))[0].numpy().astype(np.int64)
