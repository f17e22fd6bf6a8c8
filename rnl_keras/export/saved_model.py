"""SavedModel export for TF Serving: signatures, labels asset and the versioned directory layout.

Layout (TF Serving watches ``<export_dir>/<name>/`` and serves the highest integer version)::

    <export_dir>/<name>/<version>/saved_model.pb, variables/, assets/labels.txt, assets/export_meta.json

Signatures of the exported module (all return the same outputs):

* ``serving_default``: ``frames`` uint8 ``(B, T, H, W, 3)`` RGB of any H, W up to ``max_frame_size``
  pixels a side; the graph runs the test-time transform (``rnl_keras.data.eval_transform``): resize
  the shorter side to ``resize_shorter``, centre-crop ``image_size``, normalise (ImageNet mean/std).
* ``serving_float``: ``clip`` float32 ``(B, T, S, S, 3)`` already normalised (the Keras model's input).
* ``preprocess``: ``frames`` -> ``clip`` (the in-graph preprocessing alone, for debugging clients).

Inputs are checked in the graph first (:mod:`rnl_keras.export.input_checks`): a wrong rank, frame
count or channel count, an empty batch, 0-pixel frames or frames above ``max_frame_size`` fail with
``InvalidArgumentError: assertion failed: [input 'frames': expected ...] [got shape] [...]``
instead of an error from an op inside the model. The cap bounds the memory of a request: the graph
holds the frames as float32 while resizing, 12 bytes a pixel (a 4000 x 4000 clip of 8 frames:
1.5 GB; at the default cap of 2048: at most 0.4 GB).

Outputs: ``probabilities`` float32 ``(B, K)`` (softmax of the logits), ``top_k_indices`` int32
``(B, k)``, ``top_k_scores`` float32 ``(B, k)``, ``top_k_labels`` string ``(B, k)`` (class names
embedded in the graph). The directory reloads with ``tf.saved_model.load`` in a process that has
TensorFlow only (no Keras model code is needed: the graph is self-contained).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid

import tensorflow as tf

from rnl_keras.export.input_checks import DEFAULT_MAX_FRAME_SIZE, check_clip, check_frames
from rnl_keras.export.preprocess import (IMAGENET_MEAN, IMAGENET_STD, default_resize_shorter,
                                         preprocess_frames_tf)

SERVING_DEFAULT = "serving_default"
SERVING_FLOAT = "serving_float"
PREPROCESS = "preprocess"
UINT8_INPUT = "frames"
FLOAT_INPUT = "clip"
OUTPUT_KEYS = ("probabilities", "top_k_indices", "top_k_scores", "top_k_labels")
LABELS_FILENAME = "labels.txt"
META_FILENAME = "export_meta.json"
TMP_PREFIX = ".tmp-export-"


class ExportError(RuntimeError):
    """An export step failed; the message names the step and the path involved."""


def model_input_geometry(model, num_frames: int | None = None, image_size: int | None = None):
    """(T, S) from the model's input shape ``(None, T, S, S, 3)``, overridden / completed by args."""
    try:
        shape = tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError):
        shape = (None,) * 5
    if len(shape) != 5 or (shape[-1] not in (None, 3)):
        raise ExportError(f"model {getattr(model, 'name', model)!r}: expected a (B, T, H, W, 3) clip "
                          f"input, got {shape}")
    t_model, h_model, w_model = shape[1], shape[2], shape[3]
    if h_model is not None and w_model is not None and h_model != w_model:
        raise ExportError(f"model input {shape}: only square crops are supported")
    t = num_frames or t_model
    s = image_size or h_model
    if t is None:
        raise ExportError("the model's input has no fixed number of frames: pass --num_frames")
    if s is None:
        raise ExportError("the model's input has no fixed image size: pass --image_size")
    if t_model is not None and int(t) != int(t_model):
        raise ExportError(f"--num_frames={t} but the model's input takes T={t_model}")
    if h_model is not None and int(s) != int(h_model):
        raise ExportError(f"--image_size={s} but the model's input takes {h_model}x{w_model}")
    return int(t), int(s)


class ServingModule(tf.Module):
    """Wraps a Keras video classifier (training=False) with the serving signatures."""

    def __init__(self, model, labels, num_frames: int, image_size: int,
                 resize_shorter: int | None = None, top_k: int = 5, assets=(),
                 max_frame_size: int | None = DEFAULT_MAX_FRAME_SIZE):
        super().__init__(name="rnl_serving")
        # Track the model's variables, not the Keras model object: saving a Keras 3 model as a
        # trackable re-traces its call three times and walks every layer (~30 s for ResNet-50);
        # keras.export.ExportArchive does the same. The model is reached through a closure.
        self.model_variables = list(model.variables)
        self._call_model = lambda clip: model(clip, training=False)
        self.labels = list(labels)
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.resize_shorter = int(resize_shorter or default_resize_shorter(image_size))
        if self.resize_shorter < self.image_size:
            raise ExportError(f"resize_shorter={self.resize_shorter} < image_size={self.image_size}")
        self.max_frame_size = int(max_frame_size or 0)
        if self.max_frame_size < 0:
            raise ExportError(f"max_frame_size={max_frame_size}: must be >= 0 (0: no cap)")
        self.top_k = max(1, min(int(top_k), len(self.labels)))
        # Tracked assets are copied into <version>/assets/ by tf.saved_model.save.
        self.assets = [tf.saved_model.Asset(p) for p in assets]
        t, s = self.num_frames, self.image_size
        self.serve_uint8 = tf.function(
            self._serve_uint8,
            input_signature=[tf.TensorSpec([None, t, None, None, 3], tf.uint8, name=UINT8_INPUT)])
        self.serve_float = tf.function(
            self._serve_float,
            input_signature=[tf.TensorSpec([None, t, s, s, 3], tf.float32, name=FLOAT_INPUT)])
        self.preprocess = tf.function(
            self._preprocess,
            input_signature=[tf.TensorSpec([None, t, None, None, 3], tf.uint8, name=UINT8_INPUT)])

    def _outputs(self, clip):
        logits = self._call_model(clip)
        probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        scores, indices = tf.math.top_k(probs, k=self.top_k)
        names = tf.constant(self.labels, dtype=tf.string)
        return {"probabilities": probs, "top_k_indices": tf.cast(indices, tf.int32),
                "top_k_scores": scores, "top_k_labels": tf.gather(names, indices)}

    def _preprocess(self, frames):
        frames = check_frames(frames, self.num_frames, self.max_frame_size, UINT8_INPUT)
        clip = preprocess_frames_tf(frames, self.image_size, self.resize_shorter)
        return {FLOAT_INPUT: tf.ensure_shape(clip, [None, self.num_frames, self.image_size,
                                                    self.image_size, 3])}

    def _serve_uint8(self, frames):
        # Calls the float signature's function: the model is traced (and stored) once.
        return self.serve_float(self._preprocess(frames)[FLOAT_INPUT])

    def _serve_float(self, clip):
        return self._outputs(check_clip(clip, self.num_frames, self.image_size, FLOAT_INPUT))

    def signatures(self) -> dict:
        # tf.functions with input signatures: tf.saved_model.save traces each once, in its save
        # context (tracing them here first would trace the model twice).
        return {SERVING_DEFAULT: self.serve_uint8, SERVING_FLOAT: self.serve_float,
                PREPROCESS: self.preprocess}

    def meta(self) -> dict:
        return {"num_frames": self.num_frames, "image_size": self.image_size,
                "resize_shorter": self.resize_shorter, "max_frame_size": self.max_frame_size,
                "top_k": self.top_k,
                "num_classes": len(self.labels), "labels_file": LABELS_FILENAME,
                "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "signatures": {SERVING_DEFAULT: {"input": UINT8_INPUT, "dtype": "uint8",
                                                 "shape": [None, self.num_frames, None, None, 3]},
                               SERVING_FLOAT: {"input": FLOAT_INPUT, "dtype": "float32",
                                               "shape": [None, self.num_frames, self.image_size,
                                                         self.image_size, 3]},
                               PREPROCESS: {"input": UINT8_INPUT, "output": FLOAT_INPUT}},
                "outputs": list(OUTPUT_KEYS)}


# ----------------------------------------------------------------------------- versions

_TFLITE_RE = re.compile(r"-v(\d+)(?:\.dynamic)?\.tflite$")


def existing_versions(base_dir: str) -> list[int]:
    """Integer versions present under ``base_dir`` (version directories and ``*-v<N>.tflite``)."""
    if not os.path.isdir(base_dir):
        return []
    found = set()
    for entry in os.listdir(base_dir):
        full = os.path.join(base_dir, entry)
        if entry.isdigit() and os.path.isdir(full):
            found.add(int(entry))
        m = _TFLITE_RE.search(entry)
        if m:
            found.add(int(m.group(1)))
    return sorted(found)


def next_version(base_dir: str) -> int:
    """The next free integer version (1 for a new model name)."""
    versions = existing_versions(base_dir)
    return (versions[-1] + 1) if versions else 1


def claim_version(base_dir: str, staged_dir: str) -> tuple[int, str]:
    """Atomically rename the complete ``staged_dir`` to the next free ``base_dir/<version>``.

    Never replaces an existing version: when another exporter wins the race for a number, the
    rename fails (target not empty) or the target is seen to exist, and the next number is tried.
    """
    for _ in range(1000):
        version = next_version(base_dir)
        target = os.path.join(base_dir, str(version))
        if os.path.exists(target):
            continue
        try:
            os.rename(staged_dir, target)
        except OSError:
            if os.path.exists(target):
                continue
            raise
        return version, target
    raise ExportError(f"could not claim a version directory under {base_dir!r}")


def publish_file(staged: str, target: str) -> None:
    """Move ``staged`` to ``target`` without ever replacing an existing ``target`` (hard link)."""
    try:
        os.link(staged, target)
    except FileExistsError:
        raise ExportError(f"{target!r} already exists: refusing to overwrite it") from None
    except OSError:   # file systems without hard links: best effort check + rename
        if os.path.exists(target):
            raise ExportError(f"{target!r} already exists: refusing to overwrite it") from None
        os.rename(staged, target)
        return
    os.unlink(staged)


def staging_dir(base_dir: str) -> str:
    """A fresh temp directory inside ``base_dir`` (same file system, so renames are atomic).

    Its name is not an integer, so TF Serving ignores it while it is being written.
    """
    os.makedirs(base_dir, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=base_dir)
    # mkdtemp makes it 0700; the published version must be readable by a model server running as
    # another user, like any directory this process would create (umask applies).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
    return path


def save_serving_module(module: ServingModule, out_dir: str) -> None:
    """``tf.saved_model.save`` the module with its signatures into ``out_dir`` (must not exist)."""
    try:
        tf.saved_model.save(module, out_dir, signatures=module.signatures())
    except Exception as e:  # noqa: BLE001 - re-raised with the path
        raise ExportError(f"tf.saved_model.save to {out_dir!r} failed: {type(e).__name__}: {e}") from e
    for name in (LABELS_FILENAME, META_FILENAME):
        if not os.path.isfile(os.path.join(out_dir, "assets", name)):
            raise ExportError(f"{out_dir!r}: asset {name} was not written")


def write_assets(stage: str, module_labels, meta: dict) -> list[str]:
    """Write labels.txt and export_meta.json into ``stage``; returns their paths (for Assets)."""
    os.makedirs(stage, exist_ok=True)
    labels_path = os.path.join(stage, LABELS_FILENAME)
    with open(labels_path, "w", encoding="utf-8") as f:
        f.write("\n".join(module_labels) + "\n")
    meta_path = os.path.join(stage, META_FILENAME)
    with open(meta_path, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    return [labels_path, meta_path]


def build_serving_module(model, labels, num_frames=None, image_size=None, resize_shorter=None,
                         top_k=5, asset_dir=None, extra_meta=None,
                         max_frame_size=DEFAULT_MAX_FRAME_SIZE) -> ServingModule:
    """A :class:`ServingModule` whose labels / meta assets are written to ``asset_dir``.

    ``asset_dir`` is the caller's (an existing or creatable directory it removes afterwards: the
    assets are copied into the SavedModel when it is saved).
    """
    if not asset_dir:
        raise ExportError("build_serving_module needs an asset_dir (the caller cleans it up)")
    t, s = model_input_geometry(model, num_frames, image_size)
    try:
        out = model.outputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError):
        out = None
    if out is not None and int(out) != len(labels):
        raise ExportError(f"{len(labels)} labels for a model with {out} outputs")
    probe = ServingModule(model, labels, t, s, resize_shorter, top_k,
                          max_frame_size=max_frame_size)
    meta = dict(probe.meta(), exported_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **(extra_meta or {}))
    paths = write_assets(asset_dir, labels, meta)
    return ServingModule(model, labels, t, s, resize_shorter, top_k, assets=paths,
                         max_frame_size=max_frame_size)


def cleanup(path: str | None) -> None:
    if path and os.path.exists(path):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def unique_tmp_file(base_dir: str, suffix: str) -> str:
    return os.path.join(base_dir, f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
