"""Run a model over an eval dataset and summarise single-view / multi-view accuracy.

The dataset is :func:`rnl_keras.data.make_eval_dataset`'s: batches of ``{"clip", "label",
"video_index"}`` with every video's ``views_per_video`` views (test clips x crops) adjacent.
Single view = the first view of each video; multi view = the average of all its views (grouped by
``video_index``): of the softmax probabilities (``score_average="softmax"``, the default) or of
the logits followed by a softmax (``"logits"``, the authors' released test script).
"""
from __future__ import annotations

import math
import time

import numpy as np

from rnl_keras.atomic_io import write_json_atomic
from rnl_keras.evaluation import metrics


def collect_predictions(model, dataset, log_every: int = 50, log=None) -> dict:
    """Run ``model`` (training=False) over ``dataset``; returns per-view numpy arrays.

    Returns ``{"logits": (N, K) float32, "labels": (N,) int64, "video_index": (N,) int64}``.
    """
    import tensorflow as tf  # noqa: PLC0415

    @tf.function(reduce_retracing=True)
    def forward(clip):
        return tf.cast(model(clip, training=False), tf.float32)

    logits, labels, videos = [], [], []
    t0 = time.time()
    for step, batch in enumerate(dataset, start=1):
        logits.append(forward(batch["clip"]).numpy())
        labels.append(np.asarray(batch["label"]).reshape(-1))
        videos.append(np.asarray(batch["video_index"]).reshape(-1))
        if log and log_every and step % log_every == 0:
            n = sum(len(v) for v in videos)
            log(f"evaluate: {n} views in {time.time() - t0:.0f} s")
    if not logits:
        raise ValueError("the eval dataset is empty (every sample skipped or an empty list file)")
    return {"logits": np.concatenate(logits).astype(np.float32),
            "labels": np.concatenate(labels).astype(np.int64),
            "video_index": np.concatenate(videos).astype(np.int64)}


def _num(x):
    """JSON-safe float (NaN -> None)."""
    x = float(x)
    return None if math.isnan(x) else x


def video_scores(logits: np.ndarray, video_index: np.ndarray, score_average: str = "softmax"):
    """``(videos, (V, K) probabilities)``: the views of each video averaged as ``score_average``.

    ``"softmax"``: mean over views of softmax(logits); ``"logits"``: softmax(mean over views of
    the logits).
    """
    if score_average == "softmax":
        return metrics.average_views(metrics.softmax(logits), video_index)
    if score_average == "logits":
        videos, mean_logits = metrics.average_views(np.asarray(logits, np.float64), video_index)
        return videos, metrics.softmax(mean_logits)
    raise ValueError(f"score_average must be 'softmax' or 'logits', got {score_average!r}")


def summarize(logits: np.ndarray, labels: np.ndarray, video_index: np.ndarray, num_classes: int,
              class_names=None, score_average: str = "softmax") -> dict:
    """The evaluation report (JSON-ready) and the multi-view confusion matrix.

    ``score_average``: how the views of a video are combined (:func:`video_scores`).

    Keys: ``top1``, ``top5`` (multi-view), ``single_view`` {top1, top5}, ``multi_view`` {top1, top5,
    views_per_video}, ``per_class`` {name: multi-view accuracy or None when the class has no
    video}, ``per_class_support``, ``mean_class_accuracy``, ``num_videos``, ``num_views``,
    ``confusion_matrix`` (list of lists, rows = true class).
    """
    logits = np.asarray(logits, np.float32)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"logits of shape {logits.shape} for {num_classes} classes")
    probs = metrics.softmax(logits)
    videos, vlabels = metrics.video_labels(labels, video_index)
    _, single = metrics.first_view(probs, video_index)
    _, multi = video_scores(logits, video_index, score_average)
    pred = multi.argmax(axis=1)
    cm = metrics.confusion_matrix(pred, vlabels, num_classes)
    per_class = metrics.per_class_accuracy(pred, vlabels, num_classes)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    vpv = metrics.views_per_video(video_index)
    report = {
        "top1": _num(metrics.top_k_accuracy(multi, vlabels, 1)),
        "top5": _num(metrics.top_k_accuracy(multi, vlabels, 5)),
        "single_view": {"top1": _num(metrics.top_k_accuracy(single, vlabels, 1)),
                        "top5": _num(metrics.top_k_accuracy(single, vlabels, 5))},
        "multi_view": {"top1": _num(metrics.top_k_accuracy(multi, vlabels, 1)),
                       "top5": _num(metrics.top_k_accuracy(multi, vlabels, 5)),
                       "views_per_video": vpv["max"] if vpv["min"] == vpv["max"] else vpv,
                       "score_average": score_average},
        "per_class": {names[c]: _num(per_class[c]) for c in range(num_classes)},
        "per_class_support": {names[c]: int(cm[c].sum()) for c in range(num_classes)},
        "mean_class_accuracy": _num(metrics.mean_class_accuracy(pred, vlabels, num_classes)),
        "num_videos": int(len(videos)),
        "num_views": int(len(labels)),
        "num_classes": int(num_classes),
    }
    return report, cm


def write_report(report: dict, path: str) -> None:
    """Write ``report`` as indented JSON (creates the parent directory; atomic replace)."""
    write_json_atomic(path, report)
