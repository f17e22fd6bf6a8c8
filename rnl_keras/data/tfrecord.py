"""TFRecord shards of JPEG frames: the ``tf.train.SequenceExample`` format, its parser and writer.

One SequenceExample per video. Context: ``label`` (int64), ``num_frames`` (int64), ``index`` (int64,
the sample's position in the source list), ``height``/``width`` (int64), ``path`` (bytes, the source).
Feature list ``frames``: one JPEG (bytes) per frame, in order.

Shards are written to ``<name>.tmp-<pid>`` and renamed with ``os.replace`` when complete, then a JSON
manifest ``<shard>.json`` (count, labels, skipped samples) is written the same way. A shard counts as
done only when both exist, so a killed run leaves no half shard that reads as valid and a rerun
resumes with the missing shards.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

CONTEXT_FEATURES = {
    "label": tf.io.FixedLenFeature([], tf.int64),
    "num_frames": tf.io.FixedLenFeature([], tf.int64),
    "index": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "path": tf.io.FixedLenFeature([], tf.string, default_value=""),
}
SEQUENCE_FEATURES = {"frames": tf.io.FixedLenSequenceFeature([], tf.string)}


def parse_sequence_example(record) -> dict:
    """Serialized SequenceExample -> ``{"frames": (n,) string JPEGs, "label", "num_frames", "index"}``.

    ``num_frames`` is the number of stored frames (int32); pure TF ops.
    """
    context, seq = tf.io.parse_single_sequence_example(
        record, context_features=CONTEXT_FEATURES, sequence_features=SEQUENCE_FEATURES)
    frames = seq["frames"]
    return {"frames": frames,
            "num_frames": tf.shape(frames)[0],
            "label": tf.cast(context["label"], tf.int32),
            "index": tf.cast(context["index"], tf.int32),
            "path": context["path"]}


def _int(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


def make_sequence_example(jpegs: list[bytes], label: int, index: int, height: int, width: int,
                          path: str) -> bytes:
    """Serialize one video as a SequenceExample (see module docstring)."""
    ex = tf.train.SequenceExample()
    ctx = ex.context.feature
    ctx["label"].CopyFrom(_int(label))
    ctx["num_frames"].CopyFrom(_int(len(jpegs)))
    ctx["index"].CopyFrom(_int(index))
    ctx["height"].CopyFrom(_int(height))
    ctx["width"].CopyFrom(_int(width))
    ctx["path"].bytes_list.value.append(path.encode("utf-8", "surrogateescape"))
    fl = ex.feature_lists.feature_list["frames"]
    for j in jpegs:
        fl.feature.add().bytes_list.value.append(j)
    return ex.SerializeToString()


def shard_name(output_dir: str, prefix: str, i: int, n: int) -> str:
    """``<output_dir>/<prefix>-00003-of-00016.tfrecord``."""
    return os.path.join(output_dir, f"{prefix}-{i:05d}-of-{n:05d}.tfrecord")


def shard_is_complete(path: str) -> bool:
    """True when the shard and its manifest exist and the manifest says complete."""
    mpath = path + ".json"
    if not (os.path.isfile(path) and os.path.isfile(mpath)):
        return False
    try:
        with open(mpath) as f:
            return bool(json.load(f).get("complete"))
    except (OSError, ValueError):
        return False


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """uint8 RGB -> JPEG bytes (Pillow)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _resize_shorter(rgb: np.ndarray, size: int | None) -> np.ndarray:
    if not size:
        return rgb
    h, w = rgb.shape[:2]
    if min(h, w) == size:
        return rgb
    from PIL import Image
    s = size / min(h, w)
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * s)), max(1, round(h * s))),
                                                  Image.BILINEAR))


def video_jpegs(source: str, path: str, num_frames: int, template: str, start: int,
                resize_shorter: int | None, quality: int, stride: int = 1) -> tuple[list, int, int]:
    """All frames of one sample as JPEGs (resized to the shorter side); raises BadSampleError."""
    from rnl_keras.data.errors import BadSampleError
    from rnl_keras.data.frames import read_frame_files
    from rnl_keras.data.video import iter_video_frames
    jpegs, hw = [], (0, 0)
    if source == "video":
        frames = iter_video_frames(path, max_shorter=None, stride=stride)
    else:
        frames = (read_frame_files(path, [i], template, start, num_frames)[0]
                  for i in range(0, num_frames, stride))
    for rgb in frames:
        rgb = _resize_shorter(rgb, resize_shorter)
        hw = rgb.shape[:2]
        jpegs.append(encode_jpeg(rgb, quality))
    if not jpegs:
        raise BadSampleError(path, "no decodable frames")
    return jpegs, hw[0], hw[1]


def write_shard(shard: str, items: list, source: str, template: str, start: int,
                resize_shorter: int | None, quality: int, stride: int = 1, progress=None) -> dict:
    """Write one shard from ``items`` (``(path, label, num_frames, index)``) atomically.

    Bad samples are skipped, logged and listed in the manifest. Returns the manifest.
    """
    from rnl_keras.data.errors import BadSampleError, BadSampleLog
    tmp = f"{shard}.tmp-{os.getpid()}"
    labels, indices, skipped = [], [], []
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for path, label, num_frames, index in items:
                try:
                    jpegs, h, w = video_jpegs(source, path, num_frames, template, start,
                                              resize_shorter, quality, stride)
                except BadSampleError as e:
                    skipped.append(BadSampleLog.record(e.path, e.reason))
                else:
                    writer.write(make_sequence_example(jpegs, label, index, h, w, path))
                    labels.append(int(label))
                    indices.append(int(index))
                if progress is not None:
                    progress(1)
        os.replace(tmp, shard)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    manifest = {"complete": True, "num_examples": len(labels), "labels": labels,
                "indices": indices, "skipped": skipped}
    mtmp = f"{shard}.json.tmp-{os.getpid()}"
    with open(mtmp, "w") as f:
        json.dump(manifest, f)
    os.replace(mtmp, shard + ".json")
    return manifest


class Progress:
    """A one-line ``\\r`` progress bar on stderr: done/total, rate, ETA."""

    def __init__(self, total: int, label: str = "", stream=None):
        self.total, self.done, self.label = total, 0, label
        self.stream = stream or sys.stderr
        self.t0 = time.time()

    def __call__(self, n: int = 1) -> None:
        self.done += n
        dt = max(time.time() - self.t0, 1e-6)
        rate = self.done / dt
        eta = (self.total - self.done) / rate if rate > 0 else 0
        width = 30
        fill = int(width * self.done / max(self.total, 1))
        self.stream.write(f"\r{self.label}[{'=' * fill}{'.' * (width - fill)}] {self.done}/{self.total}"
                          f" {rate:.1f}/s ETA {eta:.0f}s ")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
