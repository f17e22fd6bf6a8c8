"""Export a trained .keras model for serving: ``python pipelines/export.py --model=m.keras --name=N``.

Writes, under ``--export_dir`` (default ``saved_models``)::

    <name>/<version>/                    SavedModel in TF Serving's versioned layout (next free
                                         integer; existing versions are never overwritten)
    <name>/<version>/assets/labels.txt   class names (also embedded in the graph: top_k_labels)
    <name>/<name>-v<version>.tflite          float32 TFLite (builtin ops only)
    <name>/<name>-v<version>.dynamic.tflite  dynamic-range quantised TFLite
    <name>/export_report.json            parity figures of every version

Signatures: ``serving_default`` takes uint8 frames ``(B, T, H, W, 3)`` of any H, W up to
``--max_frame_size`` pixels a side (the graph runs the evaluation's test transform: resize the
shorter side to ``--resize_shorter``, default S * 256 // 224 = 256 for S = 224, centre crop S,
normalise); ``serving_float`` takes normalised float32 clips ``(B, T, S, S, 3)``. Both return
``probabilities``, ``top_k_indices``, ``top_k_scores`` and ``top_k_labels``. Inputs of the wrong
rank, frame count or channel count, empty batches, 0-pixel frames and frames above the cap are
refused in the graph with an error naming the expected shape and the shape received.
``--image_size`` other than the model's rebuilds its graph at that size with the same weights.
``--export_dir`` is checked before anything else (a file, or a read-only place, is refused naming
the flag); a failed export leaves no temporary file or directory behind. Before a version is
published, the SavedModel is reloaded and compared with the Keras model, and the TFLite files with
the SavedModel, on a few clips (``--parity_videos`` or synthetic ones); a float mismatch above
``--tolerance`` or a non-builtin op fails the export.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import rnl_keras  # noqa: E402,F401  (before TensorFlow loads: the package's oneDNN default)

from absl import app, flags, logging  # noqa: E402

flags.DEFINE_string("model", None, "Trained Keras model file (.keras), e.g. model_dir/best.keras.")
flags.DEFINE_string("name", None, "Model name: the export goes to <export_dir>/<name>/<version>/ "
                    "(the name TF Serving's --model_name uses).")
flags.DEFINE_string("export_dir", "saved_models", "Base directory of the exports.")
flags.DEFINE_string("labels", None, "Class names file, one a line, in label order. Default: the "
                    "Kinetics-400 names (rnl_keras/data/kinetics400_classes.txt) for 400-class "
                    "models; required otherwise.")
flags.DEFINE_integer("num_frames", None, "Frames per clip T (default: from the model's input).")
flags.DEFINE_integer("image_size", None, "Crop size S (default: from the model's input; another "
                     "size rebuilds the graph at S with the same weights, as evaluate.py does).")
flags.DEFINE_integer("resize_shorter", None, "serving_default resizes the shorter side of the "
                     "frames to this before the centre S x S crop (default: trained size * 256 "
                     "// 224, at least S: 256 for a 224 model, the default of evaluate.py, so "
                     "the export reproduces its 1-clip 1-crop view exactly).")
flags.DEFINE_integer("max_frame_size", 2048, "serving_default refuses (with a clear error, in the "
                     "graph) frames taller or wider than this many pixels; 0: no cap. The graph "
                     "holds a request's frames as float32 while resizing, 12 bytes a pixel: 8 "
                     "frames of 2048 x 2048 take 0.4 GB, of 4000 x 4000 1.5 GB. Clients "
                     "downscale larger videos first (predict.py --max_shorter).")
flags.DEFINE_integer("top_k", 5, "Number of top classes returned by the signatures.")
flags.DEFINE_bool("tflite", True, "Also write float32 and dynamic-range quantised .tflite files "
                  "(--notflite to skip).")
flags.DEFINE_list("parity_videos", [], "Video files for the export-time parity checks (default: "
                  "synthetic clips).")
flags.DEFINE_integer("num_parity_clips", 4, "Synthetic parity clips when --parity_videos is empty.")
flags.DEFINE_float("tolerance", 1e-3, "Max abs probability difference allowed between SavedModel "
                   "and Keras model, and float TFLite and SavedModel.")
flags.mark_flags_as_required(["model", "name"])

FLAGS = flags.FLAGS


def load_keras_model(path):
    """Load a .keras file written by the trainer (registers rnl_keras's custom layers first)."""
    if not os.path.isfile(path):
        raise app.UsageError(f"--model={path}: no such file")
    import keras
    import rnl_keras.layers  # noqa: F401 - registers the custom layers for deserialisation
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001
        raise app.UsageError(f"--model={path}: cannot load the Keras model: "
                             f"{type(e).__name__}: {e}") from None


def at_export_size(model):
    """The model at ``--image_size`` (rebuilt when it differs) and the serving shorter side."""
    from rnl_keras.data.eval_transform import default_resize_shorter
    from rnl_keras.evaluation.rebuild import RebuildError, input_geometry, with_input_size
    try:
        _, trained, _ = input_geometry(model)
        if FLAGS.image_size:
            model = with_input_size(model, FLAGS.image_size)
    except RebuildError as e:
        raise app.UsageError(f"--image_size={FLAGS.image_size}: {e}") from None
    size = FLAGS.image_size or trained
    if FLAGS.resize_shorter or not size:
        return model, FLAGS.resize_shorter
    return model, default_resize_shorter(size, trained)


def check_flags():
    """Refuse a negative --max_frame_size and an unwritable destination before the model loads."""
    from rnl_keras.export import ExportError
    from rnl_keras.export.destination import check_destination
    if FLAGS.max_frame_size < 0:
        raise app.UsageError(f"--max_frame_size={FLAGS.max_frame_size}: must be >= 0 (0: no cap)")
    try:   # before loading the model: an unwritable destination is refused at once
        check_destination(FLAGS.export_dir, FLAGS.name)
    except ExportError as e:
        raise app.UsageError(str(e)) from None


def read_parity_clips(model):
    """The --parity_videos as one uint8 batch ``(N, T, H, W, 3)`` (None when there are none).

    Videos of different frame sizes are centre-cropped to the smallest height and width.
    """
    import numpy as np

    from rnl_keras.export.predictor import VideoReadError, read_clip
    if not FLAGS.parity_videos:
        return None
    t = FLAGS.num_frames or model.inputs[0].shape[1]
    try:
        frames = [read_clip(v, int(t)) for v in FLAGS.parity_videos]
    except VideoReadError as e:
        raise app.UsageError(f"--parity_videos: {e}") from None
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:   # the batch needs one frame size: centre-crop to the smallest
        h = min(s[1] for s in shapes)
        w = min(s[2] for s in shapes)
        frames = [f[:, (f.shape[1] - h) // 2:(f.shape[1] - h) // 2 + h,
                    (f.shape[2] - w) // 2:(f.shape[2] - w) // 2 + w] for f in frames]
    return np.stack(frames)


def run_export(model, resize_shorter, clips):
    """``export_model`` with the flags; returns its report. A labels problem is a usage error;
    a failed export (or an OS error such as a full disk) logs one line and exits 1."""
    from rnl_keras.export import ExportError, LabelsError, TFLiteExportError, export_model
    try:
        return export_model(model, FLAGS.export_dir, FLAGS.name, FLAGS.labels,
                            num_frames=FLAGS.num_frames, image_size=FLAGS.image_size,
                            resize_shorter=resize_shorter, top_k=FLAGS.top_k,
                            max_frame_size=FLAGS.max_frame_size,
                            tflite=FLAGS.tflite, parity_clips=clips,
                            num_parity_clips=FLAGS.num_parity_clips, tolerance=FLAGS.tolerance,
                            source=os.path.abspath(FLAGS.model), log=logging.info)
    except LabelsError as e:
        raise app.UsageError(str(e)) from None
    except (ExportError, TFLiteExportError) as e:
        logging.error("export failed: %s", e)
        sys.exit(1)
    except OSError as e:   # e.g. the disk filled up while writing: one line, non-zero exit
        logging.error("export failed: %s: %s", type(e).__name__, e)
        sys.exit(1)


def export_summary(report):
    """The figures printed at the end: version, files, parity and the report file's path."""
    p = report["saved_model_parity"]
    summary = {
        "name": report["name"], "version": report["version"], "files": report["files"],
        "saved_model_vs_keras_max_abs_prob_diff": max(
            p["float_signature_vs_keras"]["max_abs_prob_diff"],
            p["uint8_signature_vs_keras_on_numpy_preprocessing"]["max_abs_prob_diff"]),
    }
    if report["tflite"]:
        summary["tflite_float_vs_saved_model_max_abs_prob_diff"] = \
            report["tflite"]["float"]["max_abs_prob_diff"]
        summary["tflite_dynamic_top1_agreement"] = report["tflite"]["dynamic"]["top1_agreement"]
    summary["report"] = report["report_file"]
    return summary


def main(argv):
    """Check the flags, load the model (at --image_size), export it and print the summary JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import logging as pylogging
    # TensorFlow's INFO records (e.g. one line listing every captured variable of a signature)
    # would drown the export log at absl's default INFO verbosity.
    pylogging.getLogger("tensorflow").setLevel(pylogging.WARNING)
    check_flags()
    model = load_keras_model(FLAGS.model)
    model, resize_shorter = at_export_size(model)
    report = run_export(model, resize_shorter, read_parity_clips(model))
    print(json.dumps(export_summary(report), indent=2))


if __name__ == "__main__":
    app.run(main)
