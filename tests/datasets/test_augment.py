"""One crop box and one flip decision per clip; test views."""
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.data import DataConfig
from rnl_keras.data.augment import crop_offsets, normalize, eval_views, train_augment
from rnl_keras.data.config import IMAGENET_STD


def _clip(t=6, h=60, w=80):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, (h, w, 3))
    return np.stack([base + 5 * k for k in range(t)]).astype(np.uint8)   # frame k = base + 5k


def _cfg(**kw):
    return DataConfig(source="video", list_file="x", num_frames=6, image_size=32,
                      resize_shorter=40, **kw)


def test_same_crop_and_flip_for_every_frame():
    clip = _clip()
    flips = set()
    for s in range(30):
        out, _, info = train_augment(tf.constant(clip), 0, _cfg(), tf.constant([s, 1], tf.int64))
        out = out.numpy()
        y, x, h, w = info["box"].numpy()
        flipped = bool(info["flipped"].numpy())
        flips.add(flipped)
        assert 0 <= y and 0 <= x and y + h <= 60 and x + w <= 80
        # The expected clip: the SAME box (and flip) applied to every frame.
        ref = tf.image.resize(tf.cast(clip[:, y:y + h, x:x + w], tf.float32), [32, 32])
        if flipped:
            ref = tf.reverse(ref, [2])
        np.testing.assert_allclose(out, normalize(ref).numpy(), atol=1e-4)
        # Frames differ only by the constant brightness step: same crop, same flip.
        step = (out[1:] - out[:-1]) * np.array(IMAGENET_STD) * 255
        np.testing.assert_allclose(step, 5.0, atol=1e-2)
    assert flips == {True, False}


def test_crop_scales_follow_tsm():
    sizes = set()
    for s in range(60):
        y, x, h, w = sample = train_augment(tf.constant(_clip()), 0, _cfg(),
                                            tf.constant([s, 2], tf.int64))[2]["box"].numpy()
        sizes.add((h, w))
    allowed = {int(60 * f) for f in (1, .875, .75, .66)}
    allowed = {32 if abs(a - 32) < 3 else a for a in allowed}
    assert {h for h, _ in sizes} <= allowed and {w for _, w in sizes} <= allowed
    assert len(sizes) > 3


def test_no_flip_flag_and_label_map():
    clip = tf.constant(_clip())
    for s in range(10):
        _, label, info = train_augment(clip, 2, _cfg(flip=False), tf.constant([s, 3], tf.int64))
        assert not info["flipped"].numpy() and label.numpy() == 2
    cfg = _cfg(flip_label_map={2: 3, 3: 2}, num_classes=5)
    seen = set()
    for s in range(20):
        _, label, info = train_augment(clip, 2, cfg, tf.constant([s, 4], tf.int64))
        assert label.numpy() == (3 if info["flipped"].numpy() else 2)
        seen.add(int(label.numpy()))
        _, label4, info = train_augment(clip, 4, cfg, tf.constant([s, 4], tf.int64))
        assert label4.numpy() == 4     # unmapped labels stay
    assert seen == {2, 3}


def test_test_views_three_crops():
    clips = np.stack([_clip(), _clip()])             # 2 clips, 6 frames, 60x80
    cfg = _cfg(test_crops=3)
    views = eval_views(tf.constant(clips), cfg).numpy()
    assert views.shape == (6, 6, 32, 32, 3)
    # resized to 40x53: crops at x = 0, 10, 21 along the longer (width) side, y centred at 4.
    np.testing.assert_array_equal(crop_offsets(40, 53, 32, 3).numpy(), [[4, 0], [4, 10], [4, 21]])
    np.testing.assert_array_equal(crop_offsets(53, 40, 32, 3).numpy(), [[0, 4], [10, 4], [21, 4]])
    assert not np.allclose(views[0], views[1])       # different crops
    np.testing.assert_allclose(views[0], views[3])   # clip 1 repeats clip 0 here
    assert eval_views(tf.constant(clips), _cfg()).shape == (2, 6, 32, 32, 3)
