"""Evaluate a trained model: ``python pipelines/evaluate.py --model=m.keras --list_file=val.txt ...``.

Reports top-1 / top-5 for a single view (the first view of each video) and for multi-view testing
(the scores of ``--test_clips`` x ``--test_crops`` views averaged per video, ``--score_average``),
per-class accuracy and the number of videos, as JSON (``--report``), and optionally draws the
multi-view confusion matrix (``--confusion_png``). The report's ``top1`` / ``top5`` are the
multi-view figures.

The paper's test protocols are presets (explicit flags override them)::

    --protocol=k400   10 clips x 3 crops of 256x256, shorter side 256 (Kinetics-400)
    --protocol=ssv1   2 clips x 3 crops of 256x256, shorter side 256 (Something-Something V1)
    --protocol=single 1 clip x 1 centre crop at the model's size (the default)

A model saved at one input size (train.py: 224) runs at any ``--image_size``: its graph is rebuilt
at the new size and its weights moved over (``rnl_keras.evaluation.rebuild``). Every view goes
through the one test-time transform (``rnl_keras.data.eval_transform``: full-size decode, resize
the shorter side to ``--resize_shorter``, crop, normalise), the transform of the exported
SavedModel's ``serving_default``: the same clip at the same settings gets the same probabilities.

Every way out ends the process promptly with ``os._exit`` (``rnl_keras.training.failures``, as
``train.py`` does): after an error inside a video pipeline (PyAV in a ``tf.py_function``, e.g. a
broken clip with ``--on_bad_sample=raise``) the interpreter's normal shutdown used to block for
ever at 0 % CPU. An error prints its traceback, then one line ``evaluate.py: FAILED [while
<phase>]: <cause> (exit 1)`` naming the clip; bad flags exit 1 with the usage line; SIGINT /
SIGTERM end it at once (exit 130 / 143). With ``--data_service`` a read that gets no batch for
``--data_service_timeout_s`` ends it (exit 1) naming the dispatcher and the lost worker
(``rnl_keras.data.service.stall_report``).
"""
import itertools
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
flags.DEFINE_enum("protocol", "single", ["single", "k400", "ssv1"], "Test protocol preset: "
                  "k400 = 10 clips x 3 crops at 256 (shorter side 256), ssv1 = 2 clips x 3 crops "
                  "at 256, single = 1 clip x 1 centre crop at the model's size. Explicit "
                  "--test_clips / --test_crops / --twice_sample / --image_size / "
                  "--resize_shorter override the preset.")
flags.DEFINE_enum("score_average", "softmax", ["softmax", "logits"], "How the views of a video "
                  "are combined: mean of the softmax probabilities, or mean of the logits then "
                  "softmax (the authors' released test script).")
flags.DEFINE_integer("num_frames", None, "Frames per clip T (default: the model's input; it "
                     "must equal it).")
flags.DEFINE_integer("image_size", None, "Crop size S (default: the preset's, else the model's "
                     "input). Another size than the model's rebuilds the graph at S with the same "
                     "weights.")
flags.DEFINE_integer("resize_shorter", None, "Shorter side before cropping (default: the "
                     "preset's, else trained size * 256 // 224, at least S: 256 for a model "
                     "trained at 224, TSM's test scale; the default of every program).")
flags.DEFINE_enum("sampling", "tsn", ["tsn", "dense"], "Frame sampling (TSN segments or dense).")
flags.DEFINE_integer("dense_stride", 8, "Frame stride of dense sampling.")
flags.DEFINE_bool("twice_sample", False, "TSN: add the segment-start clip (doubles test clips; "
                  "the ssv1 preset's 2 clips).")
flags.DEFINE_integer("test_clips", None, "Clips per video (temporal views; default: the "
                     "preset's).")
flags.DEFINE_enum("test_crops", None, ["1", "3"], "Crops per clip: 1 centre or 3 along the "
                  "longer side (default: the preset's).")
flags.DEFINE_integer("batch_size", 8, "Views per batch.")
flags.DEFINE_string("report", "eval_report.json", "Output JSON report.")
flags.DEFINE_string("confusion_png", None, "Optional confusion-matrix PNG (multi-view).")
flags.DEFINE_string("predictions", None, "Optional .npz of the per-view logits, labels and "
                    "video_index (to re-score or ensemble later).")
flags.DEFINE_string("labels", None, "Class names file (default: the Kinetics-400 names when K is "
                    "400, else class indices).")
flags.DEFINE_string("data_service", "", "grpc://HOST:PORT of a tf.data service dispatcher "
                    "(pipelines/data_service.py): its workers decode and transform the TFRecord "
                    "shards (--data_source=tfrecord); videos arrive in no fixed order (scores are "
                    "averaged by video index).")
flags.DEFINE_float("data_service_timeout_s", 300.0, "--data_service: stop (exit 1) when no "
                   "batch arrives for this long, e.g. after a worker holding part of the pass "
                   "was lost; the message names the dispatcher and the lost worker(s) (asked of "
                   "the dispatcher and probed: at most ~7 s more), or says why they could not "
                   "be learned.")
flags.DEFINE_enum("on_bad_sample", "skip", ["skip", "raise"], "Undecodable videos: skip (logged "
                  "and counted in the report) or raise.")
flags.mark_flags_as_required(["model", "list_file"])

FLAGS = flags.FLAGS


def resolve_model_and_settings(model):
    """The model at the test crop size and the test settings (preset + explicit flags).

    Returns ``(model, settings)``; raises ``app.UsageError`` naming the flag on a mismatch.
    """
    from rnl_keras.data.eval_transform import default_resize_shorter
    from rnl_keras.evaluation.protocol import resolve_protocol
    from rnl_keras.evaluation.rebuild import RebuildError, input_geometry, with_input_size
    try:
        t_model, h_model, _ = input_geometry(model)
    except RebuildError as e:
        raise app.UsageError(f"--model={FLAGS.model}: {e}") from None
    outputs = int(model.outputs[0].shape[-1])
    num_classes = FLAGS.num_classes or outputs
    if num_classes != outputs:
        raise app.UsageError(f"--num_classes={num_classes} but the model has {outputs} outputs")
    num_frames = FLAGS.num_frames or t_model
    if num_frames is None:
        raise app.UsageError("the model's input has no fixed T: pass --num_frames")
    if t_model is not None and int(num_frames) != int(t_model):
        raise app.UsageError(f"--num_frames={num_frames} but the model was built for T={t_model} "
                             "(the temporal shift and attention fix T; the crop size is free)")
    twice = FLAGS.twice_sample if FLAGS["twice_sample"].present else None
    crops = int(FLAGS.test_crops) if FLAGS.test_crops is not None else None
    try:
        settings = resolve_protocol(FLAGS.protocol, FLAGS.sampling, test_clips=FLAGS.test_clips,
                                    test_crops=crops, twice_sample=twice,
                                    image_size=FLAGS.image_size,
                                    resize_shorter=FLAGS.resize_shorter)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    image_size = settings["image_size"] or h_model
    if image_size is None:
        raise app.UsageError("the model's input has no fixed size: pass --image_size")
    try:
        model = with_input_size(model, int(image_size))
    except RebuildError as e:
        raise app.UsageError(f"--image_size={image_size}: {e}") from None
    resize = settings["resize_shorter"] or default_resize_shorter(int(image_size), h_model)
    if resize < image_size:
        raise app.UsageError(f"--resize_shorter={resize} is smaller than the crop size "
                             f"{image_size}")
    settings.update(num_frames=int(num_frames), image_size=int(image_size),
                    resize_shorter=int(resize), num_classes=num_classes,
                    trained_image_size=h_model)
    return model, settings


def _service_dataset(cfg):
    """The eval batches read from --data_service, each one bounded by --data_service_timeout_s
    (the process then ends with exit 1 naming the dispatcher and the lost worker: the message is
    built only then, by ``stall_report``: the trainer's ``BatchReader``)."""
    from rnl_keras.data.service import DataServiceError, service_eval_dataset
    from rnl_keras.data.service_address import DataServiceAddressError
    from rnl_keras.training.inputs import BatchReader
    if not FLAGS.data_service_timeout_s > 0:
        raise app.UsageError("--data_service_timeout_s: must be > 0")
    try:
        ds = service_eval_dataset(cfg, FLAGS.batch_size, FLAGS.data_service, None,
                                  min(30.0, FLAGS.data_service_timeout_s))
    except (DataServiceError, DataServiceAddressError) as e:
        raise app.UsageError(str(e)) from None
    reader = BatchReader(FLAGS.data_service, FLAGS.data_service_timeout_s, prog="evaluate.py")
    reader.start()
    batches = itertools.count(1)
    return reader.iterate(ds, lambda: f"reading batch {next(batches)}")


def main(argv):
    """Evaluate, then end the process with ``os._exit`` and the outcome's status (see the module
    docstring): nothing in TensorFlow's or PyAV's teardown can keep it alive."""
    from rnl_keras.training import failures
    signals = failures.StopSignals(prog="evaluate.py")   # SIGINT / SIGTERM: stop at once
    signals.install()
    phase = ["starting"]
    signals.where = lambda: phase[0]
    try:
        _evaluate(argv, phase)
    except BaseException as err:  # noqa: BLE001 - any error ends the process, promptly
        if isinstance(err, app.UsageError):
            app.usage(shorthelp=True, detailed_error=err, exitcode=None)
            failures.hard_exit(1)
        failures.exit_on_exception(err, "evaluate.py", phase[0])
    failures.hard_exit(0)


def _evaluate(argv, phase):
    """The evaluation; ``phase[0]`` is kept naming what it is doing (for the exit message)."""
    model = _load_model(argv, phase)
    from rnl_keras.data import make_eval_dataset
    from rnl_keras.evaluation import summarize
    from rnl_keras.evaluation.evaluator import collect_predictions
    model, settings = resolve_model_and_settings(model)
    num_classes = settings["num_classes"]
    class_names = _class_names(num_classes)
    cfg = _data_config(settings)
    dataset = (_service_dataset(cfg) if FLAGS.data_service
               else make_eval_dataset(cfg, FLAGS.batch_size))
    logging.info("evaluate: %s on %s (protocol %s: T=%d, S=%d, resize %d, %d clip(s) x %d crop(s), "
                 "%s averaging)", FLAGS.model, FLAGS.list_file, FLAGS.protocol,
                 settings["num_frames"], settings["image_size"], settings["resize_shorter"],
                 cfg.num_test_clips, cfg.test_crops, FLAGS.score_average)
    phase[0] = f"evaluating --list_file={FLAGS.list_file}"
    preds = collect_predictions(model, dataset, log=logging.info)
    phase[0] = "scoring the predictions"
    report, cm = summarize(preds["logits"], preds["labels"], preds["video_index"], num_classes,
                           class_names, score_average=FLAGS.score_average)
    _complete_report(report, cm, cfg, settings)
    phase[0] = f"writing --report={FLAGS.report}"
    _write_outputs(report, cm, preds, class_names, num_classes)
    print(f"videos {report['num_videos']}  single-view top1 {report['single_view']['top1']:.4f} "
          f"top5 {report['single_view']['top5']:.4f}  multi-view ({cfg.views_per_video} views) "
          f"top1 {report['top1']:.4f} top5 {report['top5']:.4f}  -> {FLAGS.report}")


def _load_model(argv, phase):
    """The --model file, loaded with rnl_keras's custom layers registered; ``app.UsageError`` on
    positional arguments or a --model that is missing or cannot be loaded."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not os.path.isfile(FLAGS.model):
        raise app.UsageError(f"--model={FLAGS.model}: no such file")
    import keras

    import rnl_keras.layers  # noqa: F401 - registers the custom layers
    phase[0] = f"loading --model={FLAGS.model}"
    try:
        return keras.saving.load_model(FLAGS.model, compile=False)
    except Exception as e:  # noqa: BLE001
        raise app.UsageError(f"--model={FLAGS.model}: cannot load: {type(e).__name__}: {e}") from None


def _class_names(num_classes):
    """The class names of --labels (default: the Kinetics-400 names when K is 400), else None."""
    from rnl_keras.export.labels import LabelsError, resolve_labels
    if not (FLAGS.labels or num_classes == 400):
        return None
    try:
        class_names, _ = resolve_labels(FLAGS.labels, num_classes)
    except LabelsError as e:
        raise app.UsageError(f"--labels: {e}") from None
    return class_names


def _data_config(settings):
    """The eval ``DataConfig`` of the flags and the resolved ``settings``, its list file checked
    (``app.UsageError`` naming the problem)."""
    from rnl_keras.data import DataConfig, ListFileError, validate_list_file
    try:
        cfg = DataConfig(source=FLAGS.data_source, list_file=FLAGS.list_file, root=FLAGS.data_root,
                         frame_template=FLAGS.frame_template,
                         num_classes=settings["num_classes"],
                         num_frames=int(settings["num_frames"]), sampling=FLAGS.sampling,
                         twice_sample=settings["twice_sample"], dense_stride=FLAGS.dense_stride,
                         test_clips=settings["test_clips"], test_crops=settings["test_crops"],
                         image_size=int(settings["image_size"]),
                         resize_shorter=settings["resize_shorter"], flip=False,
                         on_bad_sample=FLAGS.on_bad_sample, deterministic=True)
        validate_list_file(cfg)
    except (ValueError, ListFileError) as e:
        raise app.UsageError(str(e)) from None
    return cfg


def _complete_report(report, cm, cfg, settings):
    """Add the run's inputs, skipped samples, settings and confusion matrix to ``report`` (from
    ``summarize``); warn when the videos did not get the expected number of views."""
    from rnl_keras.data import BadSampleLog
    expected = cfg.views_per_video
    if report["multi_view"]["views_per_video"] != expected:
        logging.warning("evaluate: expected %d views per video, got %s", expected,
                        report["multi_view"]["views_per_video"])
    report["model"] = os.path.abspath(FLAGS.model)
    report["list_file"] = os.path.abspath(FLAGS.list_file)
    report["skipped_bad_samples"] = BadSampleLog.count()
    report["skipped_bad_sample_messages"] = BadSampleLog.messages()[:100]
    report["config"] = {"data_source": FLAGS.data_source, "protocol": FLAGS.protocol,
                        "num_frames": int(settings["num_frames"]),
                        "image_size": int(settings["image_size"]),
                        "trained_image_size": settings["trained_image_size"],
                        "resize_shorter": settings["resize_shorter"], "sampling": FLAGS.sampling,
                        "test_clips": cfg.test_clips, "test_crops": cfg.test_crops,
                        "twice_sample": cfg.twice_sample, "views_per_video": expected,
                        "score_average": FLAGS.score_average}
    report["confusion_matrix"] = cm.tolist()


def _write_outputs(report, cm, preds, class_names, num_classes):
    """Write --report, then --predictions (.npz, atomic) and --confusion_png when asked."""
    from rnl_keras.atomic_io import write_atomic
    from rnl_keras.evaluation import draw_confusion_matrix, write_report
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


if __name__ == "__main__":
    app.run(main)
