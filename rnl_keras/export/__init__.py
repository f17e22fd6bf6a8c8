"""Export, serving and inference for rnl-keras video classifiers.

* :func:`export_model`: SavedModel in TF Serving's versioned layout (uint8 ``serving_default`` with
  in-graph input checks and the evaluation's test transform, ``serving_float``), float /
  dynamic-range TFLite files, parity report.
* :mod:`rnl_keras.export.predictor`: run an exported SavedModel or .tflite file on a video.
* :mod:`rnl_keras.export.serving`: TF Serving REST / gRPC request building and response parsing.

Only this package's modules are imported here; the submodules need TensorFlow, NumPy and the
test-time transform of ``rnl_keras.data.eval_transform`` (the predictor needs PyAV for decoding),
never the model code.
"""
from rnl_keras.export.destination import check_destination
from rnl_keras.export.exporter import REPORT_FILENAME, export_model, synthetic_clips
from rnl_keras.export.input_checks import DEFAULT_MAX_FRAME_SIZE, check_clip, check_frames
from rnl_keras.export.labels import LabelsError, read_labels, resolve_labels
from rnl_keras.export.preprocess import (preprocess_frames_np, preprocess_frames_tf,
                                         resize_bilinear_np, tsn_center_indices)
from rnl_keras.export.saved_model import (FLOAT_INPUT, OUTPUT_KEYS, SERVING_DEFAULT, SERVING_FLOAT,
                                          UINT8_INPUT, ExportError, ServingModule, existing_versions,
                                          next_version)
from rnl_keras.export.tflite import TFLiteClassifier, TFLiteExportError, convert_to_tflite

__all__ = ["check_destination", "DEFAULT_MAX_FRAME_SIZE", "check_clip", "check_frames",
           "export_model", "synthetic_clips", "REPORT_FILENAME", "LabelsError", "read_labels",
           "resolve_labels", "preprocess_frames_np", "preprocess_frames_tf", "resize_bilinear_np",
           "tsn_center_indices", "FLOAT_INPUT", "UINT8_INPUT", "OUTPUT_KEYS", "SERVING_DEFAULT",
           "SERVING_FLOAT", "ExportError", "ServingModule", "existing_versions", "next_version",
           "TFLiteClassifier", "TFLiteExportError", "convert_to_tflite"]
