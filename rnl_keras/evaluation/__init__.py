"""Evaluation of trained video classifiers (the library behind ``pipelines/evaluate.py``).

NumPy metrics (top-k, per-class and mean class accuracy, confusion matrix), averaging of the views
of a video, the paper's test protocols as presets, re-laying a model at another crop size, the
JSON report and the confusion-matrix PNG.
"""
from rnl_keras.evaluation.confusion import draw_confusion_matrix
from rnl_keras.evaluation.evaluator import collect_predictions, summarize, write_report
from rnl_keras.evaluation.metrics import (average_views, confusion_matrix, first_view,
                                          mean_class_accuracy, per_class_accuracy, softmax,
                                          top_k_accuracy, top_k_correct, top_k_indices,
                                          video_labels, views_per_video)

__all__ = ["draw_confusion_matrix", "collect_predictions", "summarize", "write_report",
           "average_views", "confusion_matrix", "first_view", "mean_class_accuracy",
           "per_class_accuracy", "softmax", "top_k_accuracy", "top_k_correct", "top_k_indices",
           "video_labels", "views_per_video"]
