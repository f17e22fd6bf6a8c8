"""In-graph checks of a serving signature's input, with messages a client can act on.

A model server (TF Serving) feeds a request's tensor to the graph without comparing its shape with
the signature's, so a clip of the wrong rank, frame count or channel count, an empty batch or a
0-pixel frame would otherwise fail deep inside the model ("Input to reshape is a tensor with 48000
values...", "Incompatible shapes: [8] vs. [0,48,48,3]"). These checks run first (every later op
depends on them) and fail with ``InvalidArgumentError: assertion failed: [<what was expected>]
[got shape] [<the shape>]``.

The shape is read at run time without ops that graph optimisation could fold from the signature's
static shape: the rank is the position of a ``-1`` appended to ``tf.shape(x)``, and dimensions are
read from the shape padded with ``-1``, so a tensor of any rank is described, never indexed out of
range. Only ``Shape``, ``ConcatV2``, ``ArgMin``, ``StridedSlice``, comparisons and ``Assert`` are
used.
"""
from __future__ import annotations

import tensorflow as tf

DEFAULT_MAX_FRAME_SIZE = 2048


def _shape_and_rank(x):
    shape = tf.shape(x, out_type=tf.int32)
    rank = tf.argmin(tf.concat([shape, [-1]], 0), output_type=tf.int32)
    padded = tf.concat([shape, tf.fill([6], -1)], 0)
    return shape, rank, padded


def _chain(x, shape, checks):
    """Run the ``(condition, message)`` asserts one after the other, then return ``x``."""
    deps = []
    for cond, message in checks:
        with tf.control_dependencies(deps):
            deps = [tf.debugging.Assert(cond, [message, "got shape", shape], summarize=8)]
    with tf.control_dependencies(deps):
        return tf.identity(x)


def check_frames(frames, num_frames: int, max_frame_size: int | None = None,
                 name: str = "frames") -> tf.Tensor:
    """``frames`` after asserting it is a ``(B >= 1, num_frames, H >= 1, W >= 1, 3)`` clip batch.

    Args:
      frames: the uint8 input of ``serving_default`` / ``preprocess``.
      num_frames: T of the model.
      max_frame_size: when set, frames whose height or width exceeds it are refused (the cap of
        ``pipelines/export.py --max_frame_size``); ``None`` or 0: no cap.
      name: the input's name in the messages.

    Returns:
      ``frames`` (an identity that runs after the checks).
    """
    t = int(num_frames)
    shape, rank, p = _shape_and_rank(frames)
    want = f"input {name!r}: expected uint8 RGB clips of shape (B >= 1, T = {t}, H >= 1, W >= 1, 3)"
    checks = [
        (tf.equal(rank, 5), f"{want}; got a tensor of another rank"),
        (tf.equal(p[4], 3), f"{want}; the last axis must be the 3 RGB channels"),
        (tf.equal(p[1], t), f"{want}; the model takes exactly T = {t} frames per clip"),
        (tf.greater_equal(p[0], 1), f"{want}; the batch is empty (B = 0)"),
        (tf.logical_and(p[2] >= 1, p[3] >= 1), f"{want}; frames have no pixels (H or W = 0)"),
    ]
    if max_frame_size:
        cap = int(max_frame_size)
        checks.append((tf.logical_and(p[2] <= cap, p[3] <= cap),
                       f"input {name!r}: frames larger than {cap} pixels in height or width are "
                       f"refused (this export's max_frame_size = {cap}); downscale them before "
                       "sending (e.g. predict.py --max_shorter), or export with a larger "
                       "--max_frame_size"))
    return _chain(frames, shape, checks)


def check_clip(clip, num_frames: int, image_size: int, name: str = "clip") -> tf.Tensor:
    """``clip`` after asserting it is a ``(B >= 1, T, S, S, 3)`` batch of normalised clips."""
    t, s = int(num_frames), int(image_size)
    shape, rank, p = _shape_and_rank(clip)
    want = (f"input {name!r}: expected float32 normalised clips of shape (B >= 1, T = {t}, "
            f"S = {s}, S = {s}, 3)")
    same = tf.reduce_all(tf.equal(p[1:5], tf.constant([t, s, s, 3], tf.int32)))
    checks = [(tf.equal(rank, 5), f"{want}; got a tensor of another rank"),
              (same, f"{want}; got other dimensions"),
              (tf.greater_equal(p[0], 1), f"{want}; the batch is empty (B = 0)")]
    return _chain(clip, shape, checks)
