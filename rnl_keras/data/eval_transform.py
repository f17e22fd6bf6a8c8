"""The test-time transform, written once in TensorFlow: resize the shorter side, crop(s), normalise.

The whole test path is decode -> sample -> resize shorter -> crop(s) -> normalise:

* decode: :func:`rnl_keras.data.video.read_video_frames` at full resolution (PyAV, RGB) for video
  files, ``tf.io.decode_jpeg`` for frame folders and shards;
* sample: :func:`rnl_keras.data.sampling.eval_indices` (TSN segment centres, ``twice_sample``,
  dense windows);
* resize, crop(s), normalise: :func:`eval_transform` in this module.

Every consumer runs this one function: the evaluation pipeline (``augment.eval_views``, hence
``pipelines/evaluate.py``), the exported SavedModel's ``serving_default`` / ``preprocess`` graph
(``rnl_keras.export.preprocess.preprocess_frames_tf``), ``pipelines/predict.py`` (through that
graph) and the attention visualiser. The only other copy is the NumPy twin for TFLite clients,
``rnl_keras.export.preprocess.preprocess_frames_np`` (single centre crop), pinned to this module by
``tests/export/test_eval_transform.py``.

Resize: bilinear with half-pixel centres and no antialiasing (``tf.image.resize``), the shorter side
to ``resize_shorter`` and the longer side to ``round(longer * resize_shorter / shorter)`` (float32
arithmetic, round half to even), never below ``resize_shorter``. Crops: 1 (centre) or 3 (start,
centre, end of the longer side, centred on the shorter side; TSM's ``GroupFullResSample``).
Normalise: ``(x / 255 - mean) / std`` with the ImageNet RGB mean / std.

Default ``resize_shorter`` (:func:`default_resize_shorter`, the one default of every program):
TSM's ``scale_size = input_size * 256 // 224`` of the size the model was trained at (256 for a
model trained at 224), never below the crop. So a 224 model is tested on a centre 224 crop of
frames resized to 256 (TSM's 1-crop test) and, in the paper's protocol, on 3 crops of 256 x 256
from frames resized to 256 (TSM's ``--full_res``).
"""
from __future__ import annotations

import tensorflow as tf

from rnl_keras.imagenet import IMAGENET_MEAN, IMAGENET_STD

TEST_CROPS = (1, 3)


def default_resize_shorter(image_size: int, train_size: int | None = None) -> int:
    """The default shorter side before cropping: ``train_size * 256 // 224``, at least the crop.

    Args:
      image_size: the crop size S fed to the model at test time.
      train_size: the size the model was trained at (default: ``image_size``).

    Returns:
      int: 256 for ``train_size`` 224 (any crop up to 256); ``S * 256 // 224`` when the two agree.
    """
    base = int(train_size or image_size)
    return max(int(image_size), base * 256 // 224)


def normalize(clip) -> tf.Tensor:
    """uint8 / [0, 255] float RGB -> float32 ``(x / 255 - mean) / std`` (ImageNet)."""
    x = tf.cast(clip, tf.float32) / 255.0
    return (x - tf.constant(IMAGENET_MEAN, tf.float32)) / tf.constant(IMAGENET_STD, tf.float32)


def resized_shape(height, width, size: int):
    """``(new_h, new_w)`` int32 tensors with the shorter side ``size`` (neither below ``size``)."""
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    scale = tf.constant(float(size), tf.float32) / tf.minimum(h, w)
    new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), size)
    new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), size)
    return new_h, new_w


def resize_shorter_side(frames, size: int) -> tf.Tensor:
    """Resize ``(N, H, W, 3)`` frames so that the shorter side is ``size`` (bilinear, float32)."""
    shape = tf.shape(frames)
    new_h, new_w = resized_shape(shape[-3], shape[-2], int(size))
    return tf.image.resize(tf.cast(frames, tf.float32), tf.stack([new_h, new_w]),
                           method="bilinear", antialias=False)


def crop_offsets(height, width, size: int, crops: int) -> tf.Tensor:
    """``[crops, 2]`` (y, x) offsets: the centre, or start / centre / end of the longer side."""
    cy, cx = (height - size) // 2, (width - size) // 2
    if crops == 1:
        return tf.reshape(tf.stack([cy, cx]), [1, 2])
    if crops != 3:
        raise ValueError(f"test crops must be one of {TEST_CROPS}, got {crops}")
    wide = width >= height
    along = tf.where(wide, width, height) - size
    starts = tf.stack([0, along // 2, along])
    ys = tf.where(wide, tf.fill([3], cy), starts)
    xs = tf.where(wide, starts, tf.fill([3], cx))
    return tf.stack([ys, xs], axis=1)


def resize_and_crop(clips, image_size: int, resize_shorter: int, crops: int = 1) -> tf.Tensor:
    """``(C, T, H, W, 3)`` uint8 -> ``(C * crops, T, S, S, 3)`` float32 on [0, 255], unnormalised.

    Views are clip-major (all crops of clip 0, then of clip 1, ...). The visualiser draws these
    pixels; :func:`eval_transform` normalises them for the model.
    """
    s, r = int(image_size), int(resize_shorter)
    if r < s:
        raise ValueError(f"resize_shorter={r} must be >= the crop size {s}")
    shape = tf.shape(clips)
    c, t = shape[0], shape[1]
    frames = resize_shorter_side(tf.reshape(clips, tf.concat([[c * t], shape[2:]], 0)), r)
    fshape = tf.shape(frames)
    frames = tf.reshape(frames, tf.stack([c, t, fshape[1], fshape[2], 3]))
    offsets = crop_offsets(fshape[1], fshape[2], s, int(crops))
    views = [frames[:, :, offsets[k, 0]:offsets[k, 0] + s, offsets[k, 1]:offsets[k, 1] + s, :]
             for k in range(int(crops))]
    return tf.reshape(tf.stack(views, axis=1), tf.stack([-1, t, s, s, 3]))


def eval_transform(clips, image_size: int, resize_shorter: int | None = None, crops: int = 1,
               num_frames: int | None = None) -> tf.Tensor:
    """The test-time transform: ``(C, T, H, W, 3)`` uint8 -> ``(C * crops, T, S, S, 3)`` float32.

    Resize the shorter side, crop(s), normalise (decoded, sampled frames in; see the module).

    Args:
      clips: C clips of T RGB frames of any size (uint8, or float on [0, 255]).
      image_size: crop size S.
      resize_shorter: shorter side before cropping (default :func:`default_resize_shorter`).
      crops: 1 (centre) or 3 (along the longer side).
      num_frames: T, to give the result a static frame axis.

    Returns:
      Normalised views, clip-major.
    """
    r = int(resize_shorter or default_resize_shorter(image_size))
    out = normalize(resize_and_crop(clips, image_size, r, crops))
    out.set_shape([None, num_frames, int(image_size), int(image_size), 3])
    return out
