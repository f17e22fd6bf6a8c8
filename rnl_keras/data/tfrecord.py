"""TFRecord shards of JPEG frames: the ``tf.train.SequenceExample`` format, its parser and writer.

One SequenceExample per video. Context: ``label`` (int64), ``num_frames`` (int64), ``index`` (int64,
the sample's position in the source list), ``height``/``width`` (int64), ``path`` (bytes, the source).
Feature list ``frames``: one JPEG (bytes) per frame, in order.

Shards are written to ``<name>.tmp-<pid>`` and renamed with ``os.replace`` when complete, then a JSON
manifest ``<shard>.json`` (record count ``num_examples``, byte size ``num_bytes``, labels, skipped
samples) is written the same way. A shard counts as done only when both exist and the shard still
matches its manifest (:func:`check_shard`: byte size and the records found by :func:`scan_tfrecord`),
so a killed run leaves no half shard that reads as valid, a shard cut short later (a full disk, a
partial copy) is found, and a rerun rewrites exactly the missing or damaged shards.
"""
from __future__ import annotations

import glob
import io
import json
import os
import struct
import sys
import time

import numpy as np
import tensorflow as tf

from rnl_keras.atomic_io import pid_alive

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


def scan_tfrecord(path: str) -> tuple[int, str | None]:
    """Count the complete records of a TFRecord file from its framing (no decoding, no CRC check).

    A record is ``uint64 length | uint32 crc | data[length] | uint32 crc``; the scan reads the
    12-byte headers and seeks over the data, so it costs one small read per record.

    Returns:
      ``(records, problem)``: the number of complete records, and ``None`` or why the file ends
      inside a record (``"cut short inside record 5 (at byte 2034: needs 1016 bytes, 470 left)"``).
    """
    size = os.path.getsize(path)
    count, pos = 0, 0
    with open(path, "rb") as f:
        while pos < size:
            header = f.read(12)
            if len(header) < 12:
                return count, (f"cut short inside the header of record {count} (at byte {pos}: "
                               f"{len(header)} of 12 bytes)")
            length = struct.unpack("<Q", header[:8])[0]
            end = pos + 12 + length + 4
            if end > size:
                return count, (f"cut short inside record {count} (at byte {pos}: needs "
                               f"{12 + length + 4} bytes, {size - pos} left)")
            f.seek(end)
            pos, count = end, count + 1
    return count, None


def read_manifest(shard: str) -> dict | None:
    """The manifest ``<shard>.json`` as a dict, or None when it is missing or unreadable."""
    try:
        with open(shard + ".json", encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def check_shard(shard: str, manifest: dict | None = None) -> tuple[int, str | None]:
    """Compare a shard with its manifest: byte size (when recorded) and the records it holds.

    Args:
      shard: the ``.tfrecord`` file.
      manifest: its manifest (read from ``<shard>.json`` when None).

    Returns:
      ``(readable, problem)``: the complete records in the file, and ``None`` when the shard
      matches its manifest or a message naming what is wrong (``"file is 2504 bytes, its manifest
      says 5085; 2 of 5 records readable: cut short inside record 2 (...)"``).
    """
    manifest = manifest if manifest is not None else read_manifest(shard)
    if manifest is None:
        return 0, f"no readable manifest {os.path.basename(shard)}.json"
    if not os.path.isfile(shard):
        return 0, "shard file not found"
    expected = int(manifest.get("num_examples", -1))
    size = os.path.getsize(shard)
    readable, tail = scan_tfrecord(shard)
    why = []
    if "num_bytes" in manifest and size != int(manifest["num_bytes"]):
        why.append(f"file is {size} bytes, its manifest says {int(manifest['num_bytes'])}")
    if tail is not None or readable != expected:
        why.append(f"{readable} of {expected} records readable" + (f": {tail}" if tail else ""))
    return readable, "; ".join(why) or None


def shard_status(path: str) -> str | None:
    """None when the shard is done (it and its manifest exist, the manifest says complete and the
    shard matches it: :func:`check_shard`), else why it must be (re)written."""
    manifest = read_manifest(path)
    if not os.path.isfile(path):
        return "not written yet"
    if not (manifest and manifest.get("complete")):
        return "no complete manifest"
    return check_shard(path, manifest)[1]


def remove_stale_temporaries(output_dir: str, prefix: str) -> list[str]:
    """Delete ``<prefix>-*.tmp-<pid>`` files (shards / manifests) of processes no longer running.

    A run killed with SIGKILL (or a crashed worker process) cannot clean up after itself; the next
    run calls this first. Files of a live process (another run writing the same directory) are kept.
    Returns the removed paths.
    """
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(output_dir), glob.escape(prefix) + "-*.tmp-*")):
        pid = tmp.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue
        try:
            os.remove(tmp)
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


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

    The shard goes to ``<shard>.tmp-<pid>`` and is renamed when complete; its manifest (record
    count, byte size, labels, indices, skipped samples) follows the same way. An old manifest is
    removed first, so a run killed mid-rewrite never leaves a manifest describing another file.
    Temporaries are removed on any failure.

    Returns:
      The manifest dict.

    Raises:
      RuntimeError: an unexpected failure on one sample, naming the sample's path (bad samples,
        :class:`BadSampleError`, are skipped, logged and listed in the manifest instead).
    """
    from rnl_keras.data.errors import BadSampleError, BadSampleLog
    tmp = f"{shard}.tmp-{os.getpid()}"
    if os.path.exists(shard + ".json"):
        os.remove(shard + ".json")
    labels, indices, skipped = [], [], []
    notes_before = len(BadSampleLog.notes())
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for path, label, num_frames, index in items:
                try:
                    jpegs, h, w = video_jpegs(source, path, num_frames, template, start,
                                              resize_shorter, quality, stride)
                except BadSampleError as e:
                    skipped.append(BadSampleLog.record(e.path, e.reason))
                except Exception as e:  # noqa: BLE001 - name the sample, then stop
                    raise RuntimeError(f"{path}: {type(e).__name__}: {e}") from e
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
    manifest = {"complete": True, "num_examples": len(labels), "num_bytes": os.path.getsize(shard),
                "labels": labels, "indices": indices, "skipped": skipped,
                "notes": BadSampleLog.notes()[notes_before:]}
    mtmp = f"{shard}.json.tmp-{os.getpid()}"
    try:
        with open(mtmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f)
        os.replace(mtmp, shard + ".json")
    finally:
        if os.path.exists(mtmp):
            os.remove(mtmp)
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
