"""Video classification metrics as pure NumPy functions.

Scores are ``(N, K)`` arrays (probabilities or logits: only their order matters for top-k), labels
``(N,)`` ints. Ties in top-k are broken towards the lower class index (``np.lexsort``), so results
are deterministic and do not depend on the sort algorithm.
"""
from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (float64 inside, float32 out)."""
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """``(N, min(k, K))`` class indices by decreasing score (ties: lower index first)."""
    scores = np.asarray(scores)
    n, num_classes = scores.shape
    k = max(1, min(int(k), num_classes))
    cls = np.broadcast_to(np.arange(num_classes), scores.shape)
    order = np.lexsort((cls, -scores), axis=-1)
    return order[:, :k]


def top_k_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """``(N,)`` bool: the label is among the ``k`` best-scored classes."""
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(scores):
        raise ValueError(f"{len(scores)} score rows but {len(labels)} labels")
    if len(labels) == 0:
        return np.zeros([0], bool)
    return np.any(top_k_indices(scores, k) == labels[:, None], axis=1)


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is among the ``k`` best-scored classes (NaN when empty)."""
    correct = top_k_correct(scores, labels, k)
    return float(correct.mean()) if correct.size else float("nan")


def group_by_video(video_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(videos, inverse)``: sorted unique video ids and each view's position among them."""
    video_index = np.asarray(video_index).reshape(-1)
    videos, inverse = np.unique(video_index, return_inverse=True)
    return videos, inverse


def video_labels(labels: np.ndarray, video_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One label per video (sorted video ids); raises if a video's views disagree."""
    labels = np.asarray(labels).reshape(-1)
    videos, inverse = group_by_video(video_index)
    out = np.full(len(videos), -1, np.int64)
    out[inverse] = labels
    if np.any(out[inverse] != labels):
        bad = videos[np.unique(inverse[out[inverse] != labels])]
        raise ValueError(f"views of videos {bad[:5].tolist()} carry different labels")
    return videos, out


def average_views(probs: np.ndarray, video_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average per-view scores over each video's views: ``(videos, (V, K) mean scores)``.

    Views are grouped by ``video_index`` wherever they appear (adjacent or not).
    """
    probs = np.asarray(probs, np.float64)
    videos, inverse = group_by_video(video_index)
    sums = np.zeros((len(videos), probs.shape[1]), np.float64)
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=len(videos)).astype(np.float64)
    return videos, sums / counts[:, None]


def first_view(scores: np.ndarray, video_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first view (in dataset order) of each video: ``(videos, (V, K) scores)``."""
    scores = np.asarray(scores)
    video_index = np.asarray(video_index).reshape(-1)
    videos, first = np.unique(video_index, return_index=True)
    return videos, scores[first]


def views_per_video(video_index: np.ndarray) -> dict:
    """``{"min", "max", "mean"}`` number of views per video."""
    _, inverse = group_by_video(video_index)
    counts = np.bincount(inverse) if len(inverse) else np.zeros([0], int)
    if not counts.size:
        return {"min": 0, "max": 0, "mean": 0.0}
    return {"min": int(counts.min()), "max": int(counts.max()), "mean": float(counts.mean())}


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts; row = true class, column = predicted class."""
    predictions = np.asarray(predictions, np.int64).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.shape} predictions vs {labels.shape} labels")
    for name, arr in (("label", labels), ("prediction", predictions)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} outside [0, {num_classes}): {arr.min()}..{arr.max()}")
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, predictions), 1)
    return cm


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray,
                       num_classes: int) -> np.ndarray:
    """``(K,)`` recall of each class (NaN for classes without samples)."""
    cm = confusion_matrix(predictions, labels, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def mean_class_accuracy(predictions, labels, num_classes) -> float:
    """Mean of the per-class accuracies over classes that have samples."""
    acc = per_class_accuracy(predictions, labels, num_classes)
    acc = acc[~np.isnan(acc)]
    return float(acc.mean()) if acc.size else float("nan")
