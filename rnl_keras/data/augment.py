"""Clip-consistent augmentation and test views, in TensorFlow ops.

Every frame of a clip gets the SAME crop box and the SAME flip decision (Keras preprocessing layers
draw per image, so they must not be used on clips). Training follows TSM's
``GroupMultiScaleCrop(S, [1, .875, .75, .66])`` (max_distort 1, the 13 "more fix crop" positions)
then resize to S and an optional horizontal flip; test views resize the shorter side and take a
centre crop or 3 crops along the longer side. Output is float32 normalised with ImageNet mean/std.
"""
from __future__ import annotations

import itertools

import tensorflow as tf

from rnl_keras.data.config import IMAGENET_MEAN, IMAGENET_STD, MULTI_SCALES, DataConfig

# (x, y) offsets in quarters of the free space: TSM's fill_fix_offset(more_fix_crop=True).
_FIX_OFFSETS = ((0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0),
                (1, 1), (3, 1), (1, 3), (3, 3))
# (height scale index, width scale index) pairs with |i - j| <= max_distort = 1.
_SCALE_PAIRS = tuple((i, j) for i, j in itertools.product(range(len(MULTI_SCALES)), repeat=2)
                     if abs(i - j) <= 1)


def normalize(clip: tf.Tensor) -> tf.Tensor:
    """uint8 / [0, 255] float RGB -> float32 ``(x / 255 - mean) / std`` (ImageNet)."""
    x = tf.cast(clip, tf.float32) / 255.0
    return (x - tf.constant(IMAGENET_MEAN, tf.float32)) / tf.constant(IMAGENET_STD, tf.float32)


def sample_crop_box(height, width, image_size: int, seed) -> tf.Tensor:
    """One multi-scale crop box ``[y, x, crop_h, crop_w]`` (int32) for a whole clip."""
    base = tf.cast(tf.minimum(height, width), tf.float32)
    sizes = tf.cast(base * tf.constant(MULTI_SCALES, tf.float32), tf.int32)
    sizes = tf.where(tf.abs(sizes - image_size) < 3, image_size, sizes)   # TSM snaps near-S sizes
    sizes = tf.maximum(sizes, 1)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    pair = tf.gather(tf.constant(_SCALE_PAIRS, tf.int32),
                     tf.random.stateless_uniform([], seeds[0], 0, len(_SCALE_PAIRS), tf.int32))
    crop_h = tf.minimum(tf.gather(sizes, pair[0]), height)
    crop_w = tf.minimum(tf.gather(sizes, pair[1]), width)
    off = tf.gather(tf.constant(_FIX_OFFSETS, tf.int32),
                    tf.random.stateless_uniform([], seeds[1], 0, len(_FIX_OFFSETS), tf.int32))
    x = off[0] * ((width - crop_w) // 4)
    y = off[1] * ((height - crop_h) // 4)
    return tf.stack([y, x, crop_h, crop_w])


def _flip_table(cfg: DataConfig) -> tf.Tensor | None:
    if not cfg.flip_label_map:
        return None
    size = max([*cfg.flip_label_map.keys(), *cfg.flip_label_map.values()]) + 1
    if cfg.num_classes:
        size = max(size, cfg.num_classes)
    table = list(range(size))
    for k, v in cfg.flip_label_map.items():
        table[k] = v
    return tf.constant(table, tf.int32)


def flip_label(label, cfg: DataConfig):
    """The label of a horizontally flipped clip (``cfg.flip_label_map``; unchanged when absent)."""
    table = _flip_table(cfg)
    if table is None:
        return label
    label = tf.cast(label, tf.int32)
    inside = label < tf.shape(table)[0]
    return tf.where(inside, tf.gather(table, tf.minimum(label, tf.shape(table)[0] - 1)), label)


def train_augment(clip, label, cfg: DataConfig, seed):
    """Augment one clip ``(T, H, W, 3)`` uint8 with one crop box and one flip decision.

    Returns ``(clip float32 (T, S, S, 3) normalised, label int32, info)`` where ``info`` holds the
    ``"box"`` ``[y, x, h, w]`` and ``"flipped"`` (bool) that were applied to every frame.
    """
    seeds = tf.random.experimental.stateless_split(seed, 2)
    shape = tf.shape(clip)
    box = sample_crop_box(shape[1], shape[2], cfg.image_size, seeds[0])
    cropped = clip[:, box[0]:box[0] + box[2], box[1]:box[1] + box[3], :]
    out = tf.image.resize(tf.cast(cropped, tf.float32), [cfg.image_size, cfg.image_size])
    label = tf.cast(label, tf.int32)
    if cfg.flip:
        flipped = tf.random.stateless_uniform([], seeds[1]) < 0.5
        out = tf.cond(flipped, lambda: tf.reverse(out, axis=[2]), lambda: out)
        label = tf.cond(flipped, lambda: flip_label(label, cfg), lambda: label)
    else:
        flipped = tf.constant(False)
    out = normalize(out)
    out.set_shape([cfg.num_frames, cfg.image_size, cfg.image_size, 3])
    return out, label, {"box": box, "flipped": flipped}


def resize_shorter_side(frames, size: int):
    """Resize ``(..., H, W, 3)`` frames so that the shorter side is ``size`` (bilinear, float32)."""
    shape = tf.shape(frames)
    h, w = tf.cast(shape[-3], tf.float32), tf.cast(shape[-2], tf.float32)
    scale = size / tf.minimum(h, w)
    new_h = tf.maximum(tf.cast(tf.round(h * scale), tf.int32), size)
    new_w = tf.maximum(tf.cast(tf.round(w * scale), tf.int32), size)
    return tf.image.resize(tf.cast(frames, tf.float32), tf.stack([new_h, new_w]))


def crop_offsets(height, width, size: int, crops: int) -> tf.Tensor:
    """``[crops, 2]`` (y, x) offsets: the centre, or start / centre / end of the longer side."""
    cy, cx = (height - size) // 2, (width - size) // 2
    if crops == 1:
        return tf.reshape(tf.stack([cy, cx]), [1, 2])
    wide = width >= height
    along = tf.where(wide, width, height) - size
    starts = tf.stack([0, along // 2, along])
    ys = tf.where(wide, tf.fill([3], cy), starts)
    xs = tf.where(wide, starts, tf.fill([3], cx))
    return tf.stack([ys, xs], axis=1)


def eval_views(clips, cfg: DataConfig) -> tf.Tensor:
    """``(C, T, H, W, 3)`` uint8 -> ``(C * crops, T, S, S, 3)`` float32 normalised views.

    Views are ordered clip-major: all crops of clip 0, then of clip 1, ...
    """
    s = cfg.image_size
    shape = tf.shape(clips)
    c, t = shape[0], shape[1]
    frames = resize_shorter_side(tf.reshape(clips, tf.concat([[c * t], shape[2:]], 0)),
                                 cfg.resize_shorter)
    fshape = tf.shape(frames)
    frames = tf.reshape(frames, tf.concat([[c, t], fshape[1:]], 0))
    offsets = crop_offsets(fshape[1], fshape[2], s, cfg.test_crops)
    views = [frames[:, :, offsets[k, 0]:offsets[k, 0] + s, offsets[k, 1]:offsets[k, 1] + s, :]
             for k in range(cfg.test_crops)]
    out = normalize(tf.reshape(tf.stack(views, axis=1), [-1, cfg.num_frames, s, s, 3]))
    return out
