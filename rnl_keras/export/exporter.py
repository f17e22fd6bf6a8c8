"""One-call export of a Keras video classifier: SavedModel (TF Serving layout) + TFLite + parity.

:func:`export_model` stages everything inside ``<export_dir>/<name>/`` under temp names, checks the
written artefacts against the Keras model, and only then claims the next free version number with
an atomic rename; a failed export leaves no version behind and never touches existing versions.
The parity figures go to the log and to ``<export_dir>/<name>/export_report.json``.

``max_frame_size`` caps the frames ``serving_default`` accepts: the graph holds a request's frames
as float32 while resizing (12 bytes a pixel), so the cap bounds a request's memory.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from absl import logging

from rnl_keras.atomic_io import write_json_atomic
from rnl_keras.export import saved_model as sm
from rnl_keras.export.destination import check_destination, created_dirs, remove_created_dirs
from rnl_keras.export.input_checks import DEFAULT_MAX_FRAME_SIZE
from rnl_keras.export.labels import resolve_labels
from rnl_keras.export.preprocess import default_resize_shorter, preprocess_frames_np
from rnl_keras.export.tflite import TFLiteClassifier, TFLiteExportError, convert_to_tflite, freeze

REPORT_FILENAME = "export_report.json"


def synthetic_clips(n: int, num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``n`` uint8 clips ``(n, T, H, W, 3)``: smooth colour fields with a moving rectangle.

    Structured (not white noise) so that class scores of a random-init model are not all ties.
    """
    rng = np.random.default_rng(seed)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    out = np.empty((n, num_frames, height, width, 3), np.uint8)
    for i in range(n):
        a, b, c = rng.uniform(-1, 1, (3, 3)).astype(np.float32)
        base = 127.5 + 100.0 * np.sin(3.0 * (a * ys + b * xs) + c)
        color = rng.uniform(0, 255, 3)
        rh, rw = max(2, height // 3), max(2, width // 3)
        y0, x0 = rng.integers(0, height - rh + 1), rng.integers(0, width - rw + 1)
        vy, vx = rng.integers(-2, 3, 2)
        for t in range(num_frames):
            frame = base + rng.normal(0, 8, base.shape).astype(np.float32)
            yy = int(np.clip(y0 + vy * t, 0, height - rh))
            xx = int(np.clip(x0 + vx * t, 0, width - rw))
            frame[yy:yy + rh, xx:xx + rw] = color
            out[i, t] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _stats(a, b) -> dict:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = np.abs(a - b)
    return {"max_abs_prob_diff": float(np.nanmax(diff)) if diff.size else 0.0,
            "mean_abs_prob_diff": float(np.nanmean(diff)) if diff.size else 0.0,
            "top1_agreement": float(np.mean(a.argmax(-1) == b.argmax(-1))),
            "finite": bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b)))}


def check_saved_model(path: str, model, clips_u8: np.ndarray, image_size: int,
                      resize_shorter: int, labels) -> tuple[dict, np.ndarray, np.ndarray]:
    """Reload the SavedModel at ``path`` and compare its signatures with the Keras model.

    Returns ``(report, saved_model_float_probs, normalised_clips)``.
    """
    loaded = tf.saved_model.load(path)
    sigs = loaded.signatures
    missing = [k for k in (sm.SERVING_DEFAULT, sm.SERVING_FLOAT, sm.PREPROCESS) if k not in sigs]
    if missing:
        raise sm.ExportError(f"{path!r}: signatures {missing} missing after reload")
    clip_np = preprocess_frames_np(clips_u8, image_size, resize_shorter)
    keras_probs = _softmax(np.asarray(model(clip_np, training=False)))
    out_u8 = {k: v.numpy() for k, v in sigs[sm.SERVING_DEFAULT](
        **{sm.UINT8_INPUT: tf.constant(clips_u8)}).items()}
    out_fl = {k: v.numpy() for k, v in sigs[sm.SERVING_FLOAT](
        **{sm.FLOAT_INPUT: tf.constant(clip_np)}).items()}
    clip_graph = sigs[sm.PREPROCESS](**{sm.UINT8_INPUT: tf.constant(clips_u8)})[sm.FLOAT_INPUT].numpy()
    names = np.asarray(labels, dtype=object)
    want_labels = names[out_u8["top_k_indices"]]
    got_labels = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(out_u8["top_k_labels"])
    report = {
        "num_clips": int(len(clips_u8)),
        "clip_shape": list(clips_u8.shape[1:]),
        "float_signature_vs_keras": _stats(out_fl["probabilities"], keras_probs),
        "uint8_signature_vs_keras_on_numpy_preprocessing": _stats(out_u8["probabilities"],
                                                                  keras_probs),
        "graph_vs_numpy_preprocessing_max_abs_diff": float(np.abs(clip_graph - clip_np).max()),
        "top_k_labels_match_indices": bool(np.all(want_labels == got_labels)),
    }
    return report, out_fl["probabilities"], clip_np


def _parity_clips(clips, n: int, t: int, s: int, cap: int) -> np.ndarray:
    """The uint8 parity clips (default: ``n`` synthetic ones larger than S, within the cap)."""
    if clips is None:
        h = max(s, s + s // 4)
        w = max(s, h * 4 // 3)
        if cap:
            h, w = max(1, min(h, cap)), max(1, min(w, cap))
        return synthetic_clips(n, t, h, w, seed=0)
    clips = np.asarray(clips, np.uint8)
    if clips.ndim != 5 or clips.shape[1] != t or clips.shape[-1] != 3:
        raise sm.ExportError(f"parity clips of shape {clips.shape}: expected (N, {t}, H, W, 3) "
                             "uint8")
    if cap and max(clips.shape[2:4]) > cap:
        raise sm.ExportError(f"parity clips of {clips.shape[2]}x{clips.shape[3]} pixels exceed "
                             f"max_frame_size={cap}")
    return clips


def _read_report(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _require_saved_model_parity(sm_report: dict, tolerance: float, n: int, log) -> None:
    """Log the SavedModel-vs-Keras figures; :class:`ExportError` when above ``tolerance``."""
    worst = max(sm_report["float_signature_vs_keras"]["max_abs_prob_diff"],
                sm_report["uint8_signature_vs_keras_on_numpy_preprocessing"]["max_abs_prob_diff"])
    log(f"export: SavedModel vs Keras max abs prob diff {worst:.3g} on {n} clips (graph vs "
        f"NumPy preprocessing {sm_report['graph_vs_numpy_preprocessing_max_abs_diff']:.3g})")
    if not np.isfinite(worst) or worst > tolerance or not sm_report["top_k_labels_match_indices"]:
        raise sm.ExportError(f"SavedModel parity check failed: {json.dumps(sm_report)}")


def _stage_tflite(model, t, s, base, clip_np, sm_probs, tolerance, staged: dict, log) -> dict:
    """Convert, stage (temp names in ``base``, recorded in ``staged``) and check both TFLite files.

    Returns the TFLite part of the report; raises :class:`TFLiteExportError` on a float mismatch.
    """
    report = {}
    frozen = freeze(model, t, s)
    for kind, quantize in (("float", False), ("dynamic", True)):
        tc = time.time()
        blob = convert_to_tflite(model, t, s, quantize=quantize, frozen=frozen)
        path = sm.unique_tmp_file(base, f".{kind}.tflite")
        staged[kind] = path
        with open(path, "wb") as f:
            f.write(blob)
        probs = TFLiteClassifier(model_content=blob).probabilities(clip_np)
        stats = _stats(probs, sm_probs)
        stats.update(bytes=len(blob), convert_seconds=round(time.time() - tc, 1))
        report[kind] = stats
        log(f"export: TFLite {kind}: {len(blob) / 1e6:.1f} MB, vs SavedModel max abs prob diff "
            f"{stats['max_abs_prob_diff']:.3g}, top-1 agreement {stats['top1_agreement']:.3f}")
    fl = report["float"]
    if not fl["finite"] or fl["max_abs_prob_diff"] > tolerance:
        raise TFLiteExportError(f"float TFLite parity check failed: {json.dumps(fl)}")
    if report["dynamic"]["top1_agreement"] < 1.0:
        logging.warning("export: dynamic-range TFLite model disagrees with the SavedModel on top-1 "
                        "for %.0f%% of the parity clips",
                        100 * (1 - report["dynamic"]["top1_agreement"]))
    return report


def _publish_tflite(base, name, version, version_dir, staged: dict, tflite_report: dict) -> dict:
    """Publish the staged TFLite files under the claimed version; returns the files of the export."""
    files = {"saved_model": version_dir,
             "labels": os.path.join(version_dir, "assets", sm.LABELS_FILENAME)}
    for kind, path in list(staged.items()):
        suffix = ".tflite" if kind == "float" else ".dynamic.tflite"
        target = os.path.join(base, f"{name}-v{version}{suffix}")
        sm.publish_file(path, target)
        del staged[kind]
        tflite_report[kind]["path"] = target
        files[f"tflite_{kind}"] = target
    return files


def _append_report(base: str, name: str, version: int, report: dict) -> str:
    """Add ``report`` as ``version`` to ``<base>/export_report.json`` (atomic); returns its path."""
    report_path = os.path.join(base, REPORT_FILENAME)
    all_reports = _read_report(report_path)
    versions = all_reports.get("versions") if isinstance(all_reports.get("versions"), dict) else {}
    versions[str(version)] = report
    write_json_atomic(report_path, {"name": name, "latest_version": max(int(v) for v in versions),
                                    "versions": versions})
    return report_path


@dataclass(frozen=True)
class _Settings:
    """An export's settings, resolved and checked before any work (see :func:`export_model`)."""
    num_classes: int
    labels: list
    labels_path: str | None
    t: int                  # frames per clip
    s: int                  # crop size
    r: int                  # shorter side before the centre crop (uint8 signature)
    cap: int                # max frame size of the uint8 signature; 0: no cap
    clips: np.ndarray       # uint8 parity clips (N, T, H, W, 3)


def _check_name(name: str) -> None:
    """:class:`ExportError` unless ``name`` is a plain, non-numeric directory name."""
    if not name or os.sep in name or name.startswith(".") or name.isdigit():
        raise sm.ExportError(f"--name={name!r}: must be a plain, non-numeric directory name")


def _resolve_settings(model, labels_file, num_frames, image_size, resize_shorter, max_frame_size,
                      parity_clips, num_parity_clips) -> _Settings:
    """Labels, clip geometry, serving sizes and parity clips (arguments: :func:`export_model`'s)."""
    num_classes = int(model.outputs[0].shape[-1])
    labels, labels_path = resolve_labels(labels_file, num_classes)
    t, s = sm.model_input_geometry(model, num_frames, image_size)
    r = int(resize_shorter or default_resize_shorter(s))
    cap = int(max_frame_size or 0)
    clips = _parity_clips(parity_clips, num_parity_clips, t, s, cap)
    return _Settings(num_classes, labels, labels_path, t, s, r, cap, clips)


class _Staging:
    """What a running export has staged under temp names, and the removal of what it left.

    ``stage``: the SavedModel staging dir (None once claimed as a version); ``tflite``: kind ->
    staged TFLite file (entries leave as they are published); ``done``: the export succeeded, so
    the directories it created stay.
    """

    def __init__(self, base: str):
        self.base = base
        self.new_dirs = created_dirs(base)
        self.stage: str | None = None
        self.asset_dir: str | None = None
        self.tflite: dict[str, str] = {}
        self.done = False

    def make_dirs(self, export_dir: str) -> None:
        """Create the staging dir in ``base`` and a temporary assets dir."""
        try:
            self.stage = sm.staging_dir(self.base)
        except OSError as e:
            raise sm.ExportError(f"--export_dir={export_dir}: cannot create a directory in "
                                 f"{self.base}: {e.strerror or e}") from None
        self.asset_dir = tempfile.mkdtemp(prefix="rnl-export-assets-")

    def cleanup(self) -> None:
        """Remove every staged file and dir; also the dirs this export created when it failed."""
        sm.cleanup(self.stage)
        for path in self.tflite.values():
            sm.cleanup(path)
        if self.asset_dir:
            shutil.rmtree(self.asset_dir, ignore_errors=True)
        if not self.done:
            remove_created_dirs(self.new_dirs)


def _save_saved_model(model, staging: _Staging, st: _Settings, name: str, top_k: int, source,
                      log):
    """Build the serving module and save it as a SavedModel in the staging dir; returns it."""
    module = sm.build_serving_module(
        model, st.labels, st.t, st.s, st.r, top_k, asset_dir=staging.asset_dir,
        max_frame_size=st.cap,
        extra_meta={"source_model": source, "labels_source": st.labels_path, "name": name})
    log(f"export: tracing and saving SavedModel (T={st.t}, S={st.s}, resize_shorter={st.r}, "
        f"K={st.num_classes}) to staging dir {staging.stage}")
    sm.save_serving_module(module, staging.stage)
    return module


def _version_report(name, version, files, source, st: _Settings, module, sm_report,
                    tflite_report, t0: float, t_saved: float) -> dict:
    """The report of one exported version (``export_report.json``'s entry for it)."""
    return {"name": name, "version": version, "files": files, "source_model": source,
            "num_classes": st.num_classes, "num_frames": st.t, "image_size": st.s,
            "resize_shorter": st.r, "max_frame_size": st.cap, "top_k": module.top_k,
            "labels_source": st.labels_path,
            "signatures": module.meta()["signatures"], "outputs": list(sm.OUTPUT_KEYS),
            "saved_model_parity": sm_report, "tflite": tflite_report or None,
            "save_seconds": round(t_saved - t0, 1),
            "total_seconds": round(time.time() - t0, 1),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def export_model(model, export_dir: str, name: str, labels_file: str | None = None, *,
                 num_frames: int | None = None, image_size: int | None = None,
                 resize_shorter: int | None = None, top_k: int = 5, tflite: bool = True,
                 parity_clips: np.ndarray | None = None, num_parity_clips: int = 4,
                 tolerance: float = 1e-3, source: str | None = None,
                 max_frame_size: int | None = DEFAULT_MAX_FRAME_SIZE, log=logging.info) -> dict:
    """Export ``model`` to ``<export_dir>/<name>/<version>/`` (+ TFLite files); returns the report.

    Args:
      model: Keras model, float32 ``(B, T, S, S, 3)`` normalised clips -> logits ``(B, K)``.
      labels_file: K class names, one a line (default: Kinetics-400 names when K == 400).
      num_frames, image_size: default from the model's input shape.
      resize_shorter: shorter side before the centre crop in the uint8 signature (default
        ``rnl_keras.data.eval_transform.default_resize_shorter(S)``: ``S * 256 // 224``, 256 for
        S = 224, the evaluation's 1-crop view).
      top_k: number of top classes the signatures return.
      tflite: also write ``<name>-v<version>.tflite`` and ``.dynamic.tflite``.
      parity_clips: uint8 ``(N, T, H, W, 3)`` clips for the parity checks (default: synthetic).
      tolerance: max abs probability difference allowed between the SavedModel and the Keras model
        and between the float TFLite model and the SavedModel; larger (or NaN) fails the export.
      source: path of the .keras file, recorded in the report.
      max_frame_size: ``serving_default`` refuses frames taller or wider than this (a clear
        in-graph error; 0 or None: no cap; see the module docstring).

    Raises:
      ExportError: a bad name, an unwritable ``export_dir`` (before any work), a failed save or
        parity check. Nothing is left behind: staging files, the temporary assets directory and
        directories this call created are removed.
    """
    _check_name(name)
    check_destination(export_dir, name)
    t0 = time.time()
    st = _resolve_settings(model, labels_file, num_frames, image_size, resize_shorter,
                           max_frame_size, parity_clips, num_parity_clips)
    base = os.path.join(export_dir, name)
    staging = _Staging(base)
    try:
        staging.make_dirs(export_dir)
        module = _save_saved_model(model, staging, st, name, top_k, source, log)
        t_saved = time.time()
        sm_report, sm_probs, clip_np = check_saved_model(staging.stage, model, st.clips, st.s,
                                                         st.r, st.labels)
        _require_saved_model_parity(sm_report, tolerance, len(st.clips), log)
        tflite_report = (_stage_tflite(model, st.t, st.s, base, clip_np, sm_probs, tolerance,
                                       staging.tflite, log) if tflite else {})
        version, version_dir = sm.claim_version(base, staging.stage)
        staging.stage = None
        files = _publish_tflite(base, name, version, version_dir, staging.tflite, tflite_report)
        report = _version_report(name, version, files, source, st, module, sm_report,
                                 tflite_report, t0, t_saved)
        report["report_file"] = _append_report(base, name, version, report)
        log(f"export: wrote {name} version {version} to {version_dir} in "
            f"{report['total_seconds']:.0f} s")
        staging.done = True
        return report
    finally:
        staging.cleanup()
