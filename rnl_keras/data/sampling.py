"""TSN / dense frame sampling (as TSM's ``TSNDataSet``), written in TensorFlow ops.

All functions take the number of frames ``n`` of a video (scalar int32 tensor) and return 0-based
frame indices; frame folders add ``frame_index_start`` (TSM numbers files from 1). Random choices use
stateless ops driven by a ``seed`` tensor of shape ``(2,)`` so parallel, deterministic pipelines
reproduce exactly.

Videos shorter than T: TSN repeats frames in order (index ``floor(tick / 2 + tick * i)`` with
``tick = n / T < 1``, what TSM does at test; TSM's training path would return T copies of the first
frame, we repeat in order instead); dense sampling wraps around (``% n``), as TSM does.
"""
from __future__ import annotations

import tensorflow as tf

from rnl_keras.data.config import DataConfig


def _n(n):
    return tf.maximum(tf.cast(n, tf.int32), 1)


def tsn_train_indices(n, num_frames: int, seed) -> tf.Tensor:
    """One random frame in each of T equal segments (segment length ``n // T``); (T,) int32."""
    n = _n(n)
    t = tf.range(num_frames, dtype=tf.int32)
    avg = n // num_frames
    rand = tf.random.stateless_uniform([num_frames], seed, minval=0, maxval=tf.maximum(avg, 1),
                                       dtype=tf.int32)
    segmented = t * avg + rand
    tick = tf.cast(n, tf.float32) / num_frames
    repeated = tf.cast(tick / 2.0 + tick * tf.cast(t, tf.float32), tf.int32)
    return tf.minimum(tf.where(avg > 0, segmented, repeated), n - 1)


def tsn_eval_indices(n, num_frames: int, clips: int = 1, twice_sample: bool = False) -> tf.Tensor:
    """Segment centres (clip k of C shifted by ``tick * k / C``); ``twice_sample`` adds segment starts.

    Returns (clips or 2 * clips, T) int32. With C = 1 the first clip is TSM's segment centres
    ``int(tick / 2 + tick * i)`` and the ``twice_sample`` clip its ``int(tick * i)``.
    """
    n = _n(n)
    tick = tf.cast(n, tf.float32) / num_frames
    base = tick * tf.range(num_frames, dtype=tf.float32)
    offsets = [tick * (k + 0.5) / clips for k in range(clips)]
    if twice_sample:
        offsets += [tick * k / clips for k in range(clips)]
    out = tf.stack([tf.cast(o + base, tf.int32) for o in offsets])
    return tf.minimum(out, n - 1)


def dense_train_indices(n, num_frames: int, stride: int, seed) -> tf.Tensor:
    """T frames ``stride`` apart from a random start in the first ``n - T * stride`` frames; (T,)."""
    n = _n(n)
    sample_pos = tf.maximum(1, 1 + n - num_frames * stride)
    start = tf.random.stateless_uniform([], seed, minval=0, maxval=tf.maximum(sample_pos - 1, 1),
                                        dtype=tf.int32)
    start = tf.where(sample_pos == 1, 0, start)
    return (tf.range(num_frames, dtype=tf.int32) * stride + start) % n


def dense_eval_indices(n, num_frames: int, stride: int, clips: int = 1) -> tf.Tensor:
    """``clips`` windows with starts evenly spaced over ``[0, n - T * stride]`` (one: the centre)."""
    n = _n(n)
    sample_pos = tf.maximum(1, 1 + n - num_frames * stride)
    if clips == 1:
        starts = tf.reshape((sample_pos - 1) // 2, [1])
    else:
        starts = tf.cast(tf.linspace(0.0, tf.cast(sample_pos - 1, tf.float32), clips), tf.int32)
    t = tf.range(num_frames, dtype=tf.int32) * stride
    return (starts[:, None] + t[None, :]) % n


def train_indices(n, cfg: DataConfig, seed) -> tf.Tensor:
    """Training indices for ``cfg.sampling``; (T,) int32."""
    if cfg.sampling == "dense":
        return dense_train_indices(n, cfg.num_frames, cfg.dense_stride, seed)
    return tsn_train_indices(n, cfg.num_frames, seed)


def eval_indices(n, cfg: DataConfig) -> tf.Tensor:
    """Test indices for ``cfg.sampling``; (cfg.num_test_clips, T) int32."""
    if cfg.sampling == "dense":
        return dense_eval_indices(n, cfg.num_frames, cfg.dense_stride, cfg.test_clips)
    return tsn_eval_indices(n, cfg.num_frames, cfg.test_clips, cfg.twice_sample)
