"""Clip-consistent augmentation and test views, in TensorFlow ops.

Every frame of a clip gets the SAME crop box and the SAME flip decision (Keras preprocessing layers
draw per image, so they must not be used on clips). Training follows TSM's
``GroupMultiScaleCrop(S, [1, .875, .75, .66])`` (max_distort 1, the 13 "more fix crop" positions)
then resize to S and an optional horizontal flip. Test views are the one test-time transform of
:mod:`rnl_keras.data.eval_transform` (resize the shorter side, centre crop or 3 crops along the
longer side). Output is float32 normalised with ImageNet mean/std.
"""
from __future__ import annotations

import itertools

import tensorflow as tf

from rnl_keras.data.config import MULTI_SCALES, DataConfig
# The test-time transform and the normalisation live in one module; re-exported here.
from rnl_keras.data.eval_transform import (crop_offsets, eval_transform, normalize,  # noqa: F401
                                           resize_shorter_side)

# (x, y) offsets in quarters of the free space: TSM's fill_fix_offset(more_fix_crop=True).
_FIX_OFFSETS = ((0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0),
                (1, 1), (3, 1), (1, 3), (3, 3))
# (height scale index, width scale index) pairs with |i - j| <= max_distort = 1.
_SCALE_PAIRS = tuple((i, j) for i, j in itertools.product(range(len(MULTI_SCALES)), repeat=2)
                     if abs(i - j) <= 1)


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


def eval_views(clips, cfg: DataConfig) -> tf.Tensor:
    """``(C, T, H, W, 3)`` uint8 -> ``(C * crops, T, S, S, 3)`` float32 normalised views.

    The one test-time transform, :func:`rnl_keras.data.eval_transform.eval_transform`, with the
    config's crop size, shorter side and crop count. Views are clip-major (crops of clip 0, ...).
    """
    return eval_transform(clips, cfg.image_size, cfg.resize_shorter, cfg.test_crops,
                          num_frames=cfg.num_frames)
