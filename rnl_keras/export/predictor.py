"""Run an exported model (SavedModel version directory or .tflite file) on a video file.

Neither path needs the Keras model code: the SavedModel carries its graph, preprocessing (the
test-time transform, ``rnl_keras.data.eval_transform``) and class names; the .tflite file is fed
clips preprocessed by its NumPy twin (:func:`rnl_keras.export.preprocess.preprocess_frames_np`),
with labels and ``resize_shorter`` read from the neighbouring version directory
(``<name>/<version>/assets/``) written by the exporter (default: ``S * 256 // 224``, as everywhere).
Videos are decoded at full size and sampled at the TSN segment centres, as the evaluation does.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from rnl_keras.export.labels import LabelsError, read_labels
from rnl_keras.export.preprocess import (default_resize_shorter, preprocess_frames_np,
                                         tsn_center_indices)
from rnl_keras.export.saved_model import (LABELS_FILENAME, META_FILENAME, SERVING_DEFAULT,
                                          UINT8_INPUT)


class VideoReadError(RuntimeError):
    """A video file is missing or cannot be decoded; the message names the file."""


class ModelLoadError(RuntimeError):
    """An exported model is missing or cannot be loaded; the message names the path."""


def read_clip(video: str, num_frames: int, max_shorter: int | None = None) -> np.ndarray:
    """TSN test sampling (segment centres) of ``num_frames`` frames: uint8 ``(T, H, W, 3)``."""
    from rnl_keras.data.errors import BadSampleError  # noqa: PLC0415 - PyAV only when decoding
    from rnl_keras.data.video import probe_num_frames, read_video_frames  # noqa: PLC0415
    try:
        n = probe_num_frames(video)
        return read_video_frames(video, tsn_center_indices(n, num_frames), max_shorter=max_shorter)
    except BadSampleError as e:
        raise VideoReadError(f"cannot read video {video}: {e.reason}") from None
    except (OSError, ValueError) as e:
        raise VideoReadError(f"cannot read video {video}: {type(e).__name__}: {e}") from None


def check_video(video: str) -> int:
    """Open ``video`` and return its frame count; :class:`VideoReadError` naming it otherwise.

    Cheap (no decoding): lets command-line tools fail on a bad video before loading a model.
    """
    from rnl_keras.data.errors import BadSampleError  # noqa: PLC0415
    from rnl_keras.data.video import probe_num_frames  # noqa: PLC0415
    try:
        return probe_num_frames(video)
    except BadSampleError as e:
        raise VideoReadError(f"cannot read video {video}: {e.reason}") from None


def top_k(probs: np.ndarray, labels, k: int = 5) -> list[tuple[int, str, float]]:
    """``[(index, name, score)]`` of the ``k`` highest probabilities (ties: lower index first)."""
    probs = np.asarray(probs, np.float64).reshape(-1)
    k = max(1, min(int(k), probs.size))
    order = np.lexsort((np.arange(probs.size), -probs))[:k]
    names = list(labels) if labels is not None else []
    return [(int(i), names[i] if i < len(names) else str(int(i)), float(probs[i])) for i in order]


def latest_version_dir(path: str) -> str:
    """``path`` itself when it holds a saved_model.pb, else its highest integer subdirectory."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted(int(d) for d in os.listdir(path)
                      if d.isdigit() and os.path.isfile(os.path.join(path, d, "saved_model.pb")))
    if not versions:
        raise ModelLoadError(f"model {path}: no saved_model.pb in it nor in any integer version "
                             "subdirectory")
    return os.path.join(path, str(versions[-1]))


def _read_meta(version_dir: str) -> dict:
    path = os.path.join(version_dir, "assets", META_FILENAME)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class SavedModelPredictor:
    """Feeds uint8 frames to the ``serving_default`` signature of an exported SavedModel."""

    def __init__(self, path: str, labels: str | None = None):
        if not os.path.isdir(path):
            raise ModelLoadError(f"model {path}: no such directory")
        import tensorflow as tf  # noqa: PLC0415
        self.path = latest_version_dir(path)
        try:
            loaded = tf.saved_model.load(self.path)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"cannot load SavedModel {self.path}: {type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}") from None
        if SERVING_DEFAULT not in loaded.signatures:
            raise ModelLoadError(f"SavedModel {self.path} has no {SERVING_DEFAULT!r} signature "
                                 f"(has {sorted(loaded.signatures)})")
        self._loaded = loaded
        self.fn = loaded.signatures[SERVING_DEFAULT]
        _, kwargs = self.fn.structured_input_signature
        if UINT8_INPUT not in kwargs:
            raise ModelLoadError(f"SavedModel {self.path}: {SERVING_DEFAULT} takes "
                                 f"{sorted(kwargs)}, expected {UINT8_INPUT!r}")
        self.num_frames = int(kwargs[UINT8_INPUT].shape[1])
        label_file = labels or os.path.join(self.path, "assets", LABELS_FILENAME)
        self.labels = read_labels(label_file) if os.path.isfile(label_file) or labels else None
        self.meta = _read_meta(self.path)

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``(T, H, W, 3)`` or ``(B, T, H, W, 3)`` -> ``(K,)`` or ``(B, K)``.

        Frames above the export's ``max_frame_size`` raise ``ValueError`` (the graph would refuse
        them too); decode with ``max_shorter`` to downscale them.
        """
        import tensorflow as tf  # noqa: PLC0415
        frames = np.asarray(frames, np.uint8)
        single = frames.ndim == 4
        cap = int(self.meta.get("max_frame_size") or 0)
        if cap and frames.ndim >= 3 and max(frames.shape[-3:-1]) > cap:
            h, w = frames.shape[-3:-1]
            fit = max(1, cap * min(h, w) // max(h, w))
            raise ValueError(f"frames of {h}x{w} pixels exceed the export's max_frame_size={cap} "
                             f"(SavedModel {self.path}): decode them smaller (predict.py "
                             f"--max_shorter={fit} or less)")
        out = self.fn(**{UINT8_INPUT: tf.constant(frames[None] if single else frames)})
        probs = out["probabilities"].numpy()
        return probs[0] if single else probs


class TFLitePredictor:
    """Preprocesses in NumPy (as the SavedModel graph does) and runs a .tflite model."""

    _NAME_RE = re.compile(r"^(?P<name>.+)-v(?P<version>\d+)(?:\.dynamic)?\.tflite$")

    def __init__(self, path: str, labels: str | None = None, resize_shorter: int | None = None):
        from rnl_keras.export.tflite import TFLiteClassifier  # noqa: PLC0415
        if not os.path.isfile(path):
            raise ModelLoadError(f"model {path}: no such file")
        try:
            self.model = TFLiteClassifier(path)
        except ValueError as e:
            raise ModelLoadError(str(e)) from None
        self.path = path
        self.num_frames, self.image_size = self.model.num_frames, self.model.image_size
        version_dir = None
        m = self._NAME_RE.match(os.path.basename(path))
        if m:
            version_dir = os.path.join(os.path.dirname(os.path.abspath(path)), m.group("version"))
        self.meta = _read_meta(version_dir) if version_dir else {}
        self.resize_shorter = int(resize_shorter or self.meta.get("resize_shorter")
                                  or default_resize_shorter(self.image_size))
        label_file = labels
        if not label_file and version_dir:
            candidate = os.path.join(version_dir, "assets", LABELS_FILENAME)
            label_file = candidate if os.path.isfile(candidate) else None
        if not label_file:
            raise LabelsError(f"no labels for {path}: its version directory "
                              f"({version_dir or 'unknown: file name is not <name>-v<N>.tflite'}) "
                              "has no assets/labels.txt; pass --labels=FILE")
        self.labels = read_labels(label_file)
        if len(self.labels) != self.model.num_classes:
            raise LabelsError(f"labels file {label_file} has {len(self.labels)} names, the TFLite "
                              f"model {path} has {self.model.num_classes} outputs")

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        return preprocess_frames_np(frames, self.image_size, self.resize_shorter)

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames, np.uint8)
        single = frames.ndim == 4
        clips = self.preprocess(frames[None] if single else frames)
        probs = self.model.probabilities(clips)
        return probs[0] if single else probs


def load_predictor(path: str, labels: str | None = None, resize_shorter: int | None = None):
    """A :class:`TFLitePredictor` for ``*.tflite``, else a :class:`SavedModelPredictor`."""
    if not os.path.exists(path):
        raise ModelLoadError(f"model {path}: no such file or directory")
    if path.endswith(".tflite"):
        return TFLitePredictor(path, labels=labels, resize_shorter=resize_shorter)
    if resize_shorter:
        raise ValueError("resize_shorter is fixed inside a SavedModel; it only applies to .tflite")
    return SavedModelPredictor(path, labels=labels)


def predict_video(predictor, video: str, k: int = 5, max_shorter: int | None = None):
    """Decode ``video`` (TSN centre sampling) and return ``top_k`` of the predictor's output."""
    frames = read_clip(video, predictor.num_frames, max_shorter=max_shorter)
    probs = predictor.probabilities(frames)
    return top_k(probs, predictor.labels, k)


__all__ = ["read_clip", "check_video", "top_k", "load_predictor", "predict_video", "SavedModelPredictor",
           "TFLitePredictor", "VideoReadError", "ModelLoadError", "latest_version_dir"]
