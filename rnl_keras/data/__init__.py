"""Video input: list files, decoding, TSN/TSM sampling, clip-consistent augmentation, shards.

Sources: video files (PyAV), frame folders (``tf.io.decode_jpeg``) and TFRecord shards written by
``pipelines/prepare_data.py`` (pure TF ops). See :class:`DataConfig`.
"""
import os as _os

from rnl_keras.data.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from rnl_keras.data.errors import (BadSampleError, BadSampleLog, DamagedShardError, ListFileError,
                                   report_bad_samples)
from rnl_keras.data.list_file import Entry, count_samples, validate_list_file
from rnl_keras.data.pipeline import (is_end_of_pass, make_eval_dataset, make_train_dataset,
                                     pad_end_of_pass)

KINETICS400_CLASSES = _os.path.join(_os.path.dirname(__file__), "kinetics400_classes.txt")


def read_class_names(path: str = KINETICS400_CLASSES) -> list[str]:
    """Class names, one a line (index = line number - 1); defaults to the Kinetics-400 names."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


__all__ = ["DataConfig", "make_train_dataset", "make_eval_dataset", "validate_list_file",
           "ListFileError", "BadSampleLog", "BadSampleError", "Entry", "report_bad_samples",
           "IMAGENET_MEAN", "IMAGENET_STD", "KINETICS400_CLASSES", "read_class_names",
           "pad_end_of_pass", "is_end_of_pass", "DamagedShardError", "count_samples"]
