"""Evaluate a trained model: ``python pipelines/evaluate.py --model=m.keras --list_file=val.txt ...``.

Reports top-1 / top-5 for a single view (the first view of each video) and for multi-view testing
(softmax scores of ``--test_clips`` x ``--test_crops`` views averaged per video), per-class accuracy
and the number of videos, as JSON (``--report``), and optionally draws the multi-view confusion
matrix (``--confusion_png``). The report's ``top1`` / ``top5`` are the multi-view figures.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import rnl_keras  # noqa: E402,F401  (before TensorFlow loads: the package's oneDNN default)

from absl import app, flags, logging  # noqa: E402

flags.DEFINE_string("model", None, "Trained Keras model (.keras), e.g. model_dir/best.keras.")
flags.DEFINE_enum("data_source", "video", ["video", "frames", "tfrecord"], "Input source: video "
                  "files, frame folders, or TFRecord shards from prepare_data.py.")
flags.DEFINE_string("list_file", None, "Eval list (<path> <label> for video, <folder> <num_frames> "
                    "<label> for frames) or the shard glob for tfrecord.")
flags.DEFINE_string("data_root", "", "Directory the list's paths are relative to.")
flags.DEFINE_string("frame_template", "img_{:05d}.jpg", "Frame file names of frame folders.")
flags.DEFINE_integer("num_classes", None, "Number of classes K (default: the model's output size).")
flags.DEFINE_integer("num_frames", None, "Frames per clip T (default: the model's input).")
flags.DEFINE_integer("image_size", None, "Crop size S (default: the model's input).")
flags.DEFINE_integer("resize_shorter", None, "Shorter side before cropping (default: S * 256 / 224, "
                     "i.e. 256 for S = 224).")
flags.DEFINE_enum("sampling", "tsn", ["tsn", "dense"], "Frame sampling (TSN segments or dense).")
flags.DEFINE_integer("dense_stride", 8, "Frame stride of dense sampling.")
flags.DEFINE_bool("twice_sample", False, "TSN: add the segment-start clip (doubles test clips).")
flags.DEFINE_integer("test_clips", 1, "Clips per video (temporal views).")
flags.DEFINE_enum("test_crops", "1", ["1", "3"], "Crops per clip: 1 centre or 3 along the longer "
                  "side.")
flags.DEFINE_integer("batch_size", 8, "Views per batch.")
flags.DEFINE_string("report", "eval_report.json", "Output JSON report.")
flags.DEFINE_string("confusion_png", None, "Optional confusion-matrix PNG (multi-view).")
flags.DEFINE_string("predictions", None, "Optional .npz of the per-view logits, labels and "
                    "video_index (to re-score or ensemble later).")
flags.DEFINE_string("labels", None, "Class names file (default: the Kinetics-400 names when K is "
                    "400, else class indices).")
flags.DEFINE_enum("on_bad_sample", "skip", ["skip", "raise"], "Undecodable videos: skip (logged "
                  "and counted in the report) or raise.")
flags.mark_flags_as_required(["model", "list_file"])

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not os.path.isfile(FLAGS.model):
        raise app.UsageError(f"--model={FLAGS.model}: no such file")
    import keras

    import rnl_keras.layers  # noqa: F401 - registers the custom layers
    from rnl_keras.data import BadSampleLog, DataConfig, ListFileError, make_eval_dataset
    from rnl_keras.data import validate_list_file
    from rnl_keras.evaluation import draw_confusion_matrix, summarize, write_report
    from rnl_keras.atomic_io import write_atomic
    from rnl_keras.evaluation.evaluator import collect_predictions
    from rnl_keras.export.labels import LabelsError, resolve_labels
    try:
        model = keras.saving.load_model(FLAGS.model, compile=False)
    except Exception as e:  # noqa: BLE001
        raise app.UsageError(f"--model={FLAGS.model}: cannot load: {type(e).__name__}: {e}") from None
    in_shape = tuple(model.inputs[0].shape)
    num_classes = FLAGS.num_classes or int(model.outputs[0].shape[-1])
    if num_classes != int(model.outputs[0].shape[-1]):
        raise app.UsageError(f"--num_classes={num_classes} but the model has "
                             f"{model.outputs[0].shape[-1]} outputs")
    num_frames = FLAGS.num_frames or in_shape[1]
    image_size = FLAGS.image_size or in_shape[2]
    if num_frames is None or image_size is None:
        raise app.UsageError("the model's input has no fixed T / S: pass --num_frames and "
                             "--image_size")
    resize_shorter = FLAGS.resize_shorter or int(round(image_size * 256 / 224))
    class_names = None
    if FLAGS.labels or num_classes == 400:
        try:
            class_names, _ = resolve_labels(FLAGS.labels, num_classes)
        except LabelsError as e:
            raise app.UsageError(f"--labels: {e}") from None
    try:
        cfg = DataConfig(source=FLAGS.data_source, list_file=FLAGS.list_file, root=FLAGS.data_root,
                         frame_template=FLAGS.frame_template, num_classes=num_classes,
                         num_frames=int(num_frames), sampling=FLAGS.sampling,
                         twice_sample=FLAGS.twice_sample, dense_stride=FLAGS.dense_stride,
                         test_clips=FLAGS.test_clips, test_crops=int(FLAGS.test_crops),
                         image_size=int(image_size), resize_shorter=resize_shorter, flip=False,
                         on_bad_sample=FLAGS.on_bad_sample, deterministic=True)
        validate_list_file(cfg)
    except (ValueError, ListFileError) as e:
        raise app.UsageError(str(e)) from None
    dataset = make_eval_dataset(cfg, FLAGS.batch_size)
    logging.info("evaluate: %s on %s (T=%d, S=%d, resize %d, %d clip(s) x %d crop(s))", FLAGS.model,
                 FLAGS.list_file, num_frames, image_size, resize_shorter, cfg.num_test_clips,
                 cfg.test_crops)
    preds = collect_predictions(model, dataset, log=logging.info)
    report, cm = summarize(preds["logits"], preds["labels"], preds["video_index"], num_classes,
                           class_names)
    expected = cfg.views_per_video
    if report["multi_view"]["views_per_video"] != expected:
        logging.warning("evaluate: expected %d views per video, got %s", expected,
                        report["multi_view"]["views_per_video"])
    report["model"] = os.path.abspath(FLAGS.model)
    report["list_file"] = os.path.abspath(FLAGS.list_file)
    report["skipped_bad_samples"] = BadSampleLog.count()
    report["skipped_bad_sample_messages"] = BadSampleLog.messages()[:100]
    report["config"] = {"data_source": FLAGS.data_source, "num_frames": int(num_frames),
                        "image_size": int(image_size), "resize_shorter": resize_shorter,
                        "sampling": FLAGS.sampling, "test_clips": FLAGS.test_clips,
                        "test_crops": int(FLAGS.test_crops), "twice_sample": FLAGS.twice_sample}
    report["confusion_matrix"] = cm.tolist()
    write_report(report, FLAGS.report)
    if FLAGS.predictions:
        import numpy as np

        def save_predictions(tmp):
            with open(tmp, "wb") as f:   # a file object: savez adds no ".npz" to the name
                np.savez_compressed(f, **preds)
        write_atomic(FLAGS.predictions, save_predictions)
    if FLAGS.confusion_png:
        names = class_names or [str(i) for i in range(num_classes)]
        draw_confusion_matrix(cm, FLAGS.confusion_png, class_names=names)
    print(f"videos {report['num_videos']}  single-view top1 {report['single_view']['top1']:.4f} "
          f"top5 {report['single_view']['top5']:.4f}  multi-view ({expected} views) top1 "
          f"{report['top1']:.4f} top5 {report['top5']:.4f}  -> {FLAGS.report}")


if __name__ == "__main__":
    app.run(main)
