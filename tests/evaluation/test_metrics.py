"""Evaluation metrics against hand-computed cases."""
import math

import numpy as np
import pytest

from rnl_keras.evaluation import metrics
from rnl_keras.evaluation.evaluator import summarize

# 4 samples, 4 classes. Ranks of the true label: sample 0 -> 1st, 1 -> 2nd, 2 -> 3rd, 3 -> 4th.
SCORES = np.array([[0.70, 0.10, 0.10, 0.10],    # label 0: rank 1
                   [0.50, 0.30, 0.15, 0.05],    # label 1: rank 2
                   [0.40, 0.35, 0.20, 0.05],    # label 2: rank 3
                   [0.40, 0.30, 0.20, 0.10]])   # label 3: rank 4
LABELS = np.array([0, 1, 2, 3])


def test_top_k_accuracy_hand_computed():
    assert metrics.top_k_accuracy(SCORES, LABELS, 1) == 0.25
    assert metrics.top_k_accuracy(SCORES, LABELS, 2) == 0.5
    assert metrics.top_k_accuracy(SCORES, LABELS, 3) == 0.75
    assert metrics.top_k_accuracy(SCORES, LABELS, 5) == 1.0    # k > K: everything is in the top-k
    np.testing.assert_array_equal(metrics.top_k_correct(SCORES, LABELS, 2), [1, 1, 0, 0])
    assert math.isnan(metrics.top_k_accuracy(np.zeros((0, 4)), np.zeros([0], int), 1))


def test_ties_break_towards_the_lower_class():
    scores = np.array([[0.2, 0.4, 0.4, 0.0]])
    np.testing.assert_array_equal(metrics.top_k_indices(scores, 3), [[1, 2, 0]])
    assert metrics.top_k_accuracy(scores, np.array([2]), 1) == 0.0
    assert metrics.top_k_accuracy(scores, np.array([2]), 2) == 1.0


def test_softmax():
    p = metrics.softmax(np.array([[0.0, np.log(3.0)], [1000.0, 1000.0]]))
    np.testing.assert_allclose(p, [[0.25, 0.75], [0.5, 0.5]], atol=1e-7)


def test_multi_view_averages_by_video_index_not_by_position():
    # Video 7 has views at rows 0 and 3, video 2 at rows 1, 2 and 4 (not adjacent, not sorted).
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.1, 0.9], [0.6, 0.4]])
    vidx = np.array([7, 2, 2, 7, 2])
    videos, avg = metrics.average_views(probs, vidx)
    np.testing.assert_array_equal(videos, [2, 7])
    np.testing.assert_allclose(avg, [[0.4, 0.6], [0.5, 0.5]])
    videos, first = metrics.first_view(probs, vidx)
    np.testing.assert_allclose(first, [[0.2, 0.8], [0.9, 0.1]])
    assert metrics.views_per_video(vidx) == {"min": 2, "max": 3, "mean": 2.5}


def test_video_labels_must_agree():
    videos, labels = metrics.video_labels(np.array([1, 0, 0, 1]), np.array([5, 3, 3, 5]))
    np.testing.assert_array_equal(videos, [3, 5])
    np.testing.assert_array_equal(labels, [0, 1])
    with pytest.raises(ValueError, match="different labels"):
        metrics.video_labels(np.array([1, 0]), np.array([5, 5]))


def test_confusion_and_per_class():
    pred = np.array([0, 0, 1, 2, 2, 2])
    true = np.array([0, 1, 1, 2, 2, 0])
    cm = metrics.confusion_matrix(pred, true, 4)
    np.testing.assert_array_equal(cm, [[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]])
    acc = metrics.per_class_accuracy(pred, true, 4)
    np.testing.assert_allclose(acc[:3], [0.5, 0.5, 1.0])
    assert math.isnan(acc[3])                       # class without samples
    assert metrics.mean_class_accuracy(pred, true, 4) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix(np.array([4]), np.array([0]), 4)


def test_summarize_single_vs_multi_view():
    # 3 videos x 2 views, 3 classes. Logits chosen so that:
    #  video 0 (label 0): view A predicts 1 (wrong), view B strongly 0 -> multi right, single wrong
    #  video 1 (label 1): both views predict 1                          -> both right
    #  video 2 (label 2): view A predicts 2 weakly, view B strongly 0   -> single right, multi wrong
    big, small = 5.0, 0.5
    logits = np.array([[0, small, 0], [big, 0, 0],
                       [0, big, 0], [0, big, 0],
                       [0, 0, small], [big, 0, 0]], np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2])
    vidx = np.array([0, 0, 1, 1, 2, 2])
    names = ["a", "b", "c"]
    report, cm = summarize(logits, labels, vidx, 3, names)
    assert report["single_view"]["top1"] == pytest.approx(2 / 3)
    assert report["multi_view"]["top1"] == pytest.approx(2 / 3)
    assert report["top1"] == report["multi_view"]["top1"]
    assert report["top5"] == report["multi_view"]["top5"] == 1.0
    assert report["multi_view"]["views_per_video"] == 2
    assert report["num_videos"] == 3 and report["num_views"] == 6
    assert report["per_class"] == {"a": 1.0, "b": 1.0, "c": 0.0}
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    # Softmax averaging, not logit averaging: view A of video 2 has logits (0, 0, 0.5) and view B
    # (5, 0, 0); mean softmax of class 2 = (e^.5/(2+e^.5) + 1/(e^5+2)) / 2.
    p2 = (np.exp(0.5) / (2 + np.exp(0.5)) + 1 / (np.exp(5) + 2)) / 2
    assert p2 < 0.5  # so class 0 wins for video 2 in the multi-view average (checked via cm above)
    for key in ("top1", "top5", "single_view", "multi_view", "per_class", "num_videos"):
        assert key in report
