"""Classify a video with an exported model: ``python pipelines/predict.py VIDEO --model=PATH``.

``--model`` is a SavedModel version directory (``saved_models/<name>/<version>``), a model base
directory (``saved_models/<name>``: its highest version is used) or a ``.tflite`` file written by
``pipelines/export.py``. The video is decoded with TSN centre sampling of the model's T frames; the
SavedModel gets the uint8 frames (it resizes / crops / normalises in its graph), the TFLite model
gets the same preprocessing done in NumPy. Prints the top-k classes, one ``rank name score`` a line.
Labels come from the version's ``assets/labels.txt`` unless ``--labels`` is given.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import rnl_keras  # noqa: E402,F401  (before TensorFlow loads: the package's oneDNN default)

from absl import app, flags  # noqa: E402

flags.DEFINE_string("model", None, "SavedModel directory (version or base) or .tflite file.")
flags.DEFINE_integer("top_k", 5, "Number of classes to print.")
flags.DEFINE_string("labels", None, "Class names file (default: the export's assets/labels.txt).")
flags.DEFINE_integer("resize_shorter", None, "TFLite only: shorter side before the centre crop "
                     "(default: the export's value from assets/export_meta.json, else "
                     "S * 256 // 224 as everywhere).")
flags.DEFINE_integer("max_shorter", None, "Downscale decoded frames whose shorter side exceeds "
                     "this at decode time (default: decode at full size, exactly as evaluate.py "
                     "does). Needed for videos above the export's max_frame_size (2048 a side by "
                     "default), which the SavedModel refuses; the decoder's scaler changes the "
                     "pixels slightly.")
flags.DEFINE_bool("json", False, "Print the result as JSON instead of text lines.")
flags.mark_flag_as_required("model")

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("usage: predict.py VIDEO --model=SAVEDMODEL_DIR_or.tflite")
    video = argv[1]
    from rnl_keras.export.labels import LabelsError
    from rnl_keras.export.predictor import (ModelLoadError, VideoReadError, check_video,
                                            load_predictor, predict_video)
    try:
        check_video(video)   # fail on a missing / broken video before loading a large model
        predictor = load_predictor(FLAGS.model, labels=FLAGS.labels,
                                   resize_shorter=FLAGS.resize_shorter)
        top = predict_video(predictor, video, k=FLAGS.top_k, max_shorter=FLAGS.max_shorter)
    except (VideoReadError, ModelLoadError, LabelsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.json:
        import json
        print(json.dumps({"video": video, "model": FLAGS.model,
                          "top_k": [{"index": i, "label": n, "score": s} for i, n, s in top]}))
        return
    for rank, (index, name, score) in enumerate(top, start=1):
        print(f"{rank}\t{name}\t{score:.4f}\t(class {index})")


if __name__ == "__main__":
    app.run(main)
