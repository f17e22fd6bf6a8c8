"""End-to-end demo on CPU: synthetic data -> train -> evaluate -> export -> predict.

``make demo`` (= ``python pipelines/demo.py``) on a fresh clone:

1. writes a synthetic action dataset (real h264 mp4 files of moving shapes; the class is the motion:
   left / right / up / down, grow / shrink, clockwise / counter-clockwise) into ``demo_out/data``;
2. trains a small RNL TSM-ResNet (one bottleneck per stage, width 24: not a ResNet-50) with
   ``configs/demo.flags`` (``pipelines/train.py``);
3. evaluates the best checkpoint on the validation split (``pipelines/evaluate.py``);
4. exports it as a SavedModel and TFLite (``pipelines/export.py`` into ``saved_models/demo``);
5. classifies a real clip (``tests/data/carphone_pristine.mp4``, not one of the synthetic classes:
   the top-5 is shown as is) and one synthetic validation clip with the export
   (``pipelines/predict.py``), then prints a short report (also ``demo_out/demo_report.json``).

``--quick`` runs every stage on a reduced problem (CI); ``--shift=false`` trains the per-frame
baseline without the temporal shift to show what temporal modelling buys. Every stage is a
subprocess run with this interpreter, exactly as a user would type it.
"""
import json
import os
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from rnl_keras.atomic_io import write_json_atomic  # noqa: E402

flags.DEFINE_boolean("quick", False, "CI size: a tiny dataset and a few training steps; every "
                     "stage runs, no accuracy target.")
flags.DEFINE_boolean("shift", True, "TSM temporal shift (false: the per-frame baseline).")
flags.DEFINE_string("attention", None, "Override the attention of configs/demo.flags.")
flags.DEFINE_string("out_dir", "demo_out", "Working directory (data, run, reports).")
flags.DEFINE_string("export_dir", "saved_models", "Where the SavedModel / TFLite go.")
flags.DEFINE_string("name", "demo", "Export name (saved_models/<name>/<version>).")
flags.DEFINE_string("flagfile_path", "configs/demo.flags", "Training recipe of the demo.")
flags.DEFINE_integer("epochs", None, "Override the number of training epochs.")
flags.DEFINE_float("min_top1", None, "Exit with an error when the evaluated top-1 is below this "
                   "(default: 0.9 for the full demo, 0 for --quick).")
flags.DEFINE_boolean("tflite", True, "Also export and try the TFLite model.")
flags.DEFINE_string("real_clip", "tests/data/carphone_pristine.mp4", "A real video to classify.")
flags.DEFINE_boolean("resume", False, "Keep an existing run directory and resume its training "
                     "(default: start the training afresh).")

FLAGS = flags.FLAGS

# Synthetic data of the demo: (train, val, frames per video, frame size).
FULL_DATA = dict(num_train=960, num_val=160, num_frames=16, size=(40, 40))
QUICK_DATA = dict(num_train=16, num_val=8, num_frames=8, size=(32, 32))
# Overrides of configs/demo.flags for --quick.
QUICK_TRAIN = ["--image_size=32", "--resize_shorter=32", "--num_frames=4", "--batch_size=4",
               "--epochs=1", "--steps_per_epoch=3", "--checkpoint_every_steps=0",
               "--warmup_epochs=0"]


def _run(stage, cmd, log_path, capture=False):
    """Run one stage, streaming its output to the console and ``log_path``."""
    print(f"\n[{stage}] $ {' '.join(cmd)}", flush=True)
    t0 = time.time()
    lines = []
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    with open(log_path, "w", encoding="utf-8") as log, subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1) as proc:
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()
        rc = proc.wait()
    elapsed = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"[{stage}] failed with exit code {rc} after {elapsed:.0f} s; "
                           f"log: {log_path}")
    print(f"[{stage}] done in {elapsed:.1f} s", flush=True)
    return "".join(lines), elapsed


def _write_data(data_dir, spec):
    """Write the synthetic dataset once (kept when it already matches ``spec``)."""
    from rnl_keras.data.synthetic import write_synthetic_dataset
    marker = os.path.join(data_dir, "demo_data.json")
    wanted = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as f:
            info = json.load(f)
        if info.get("spec") == wanted and os.path.isfile(info.get("train_list", "")):
            print(f"[data] reusing {data_dir}", flush=True)
            return info
    t0 = time.time()
    info = write_synthetic_dataset(data_dir, seed=0, **spec)
    info["spec"] = wanted
    write_json_atomic(marker, info)
    print(f"[data] wrote {spec['num_train']} + {spec['num_val']} videos to {data_dir} in "
          f"{time.time() - t0:.1f} s", flush=True)
    return info


def _read_flagfile(path):
    """``{flag: value}`` of the ``--flag=value`` lines of a flag file (comments skipped)."""
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("--") and "=" in line:
                key, _, value = line[2:].partition("=")
                values[key] = value
    return values


def _top5(text):
    """The lines of predict.py's output (label / score pairs), as printed."""
    ranked = [line.rstrip() for line in text.splitlines() if line[:1].isdigit() and "\t" in line]
    return ranked or [line.rstrip() for line in text.splitlines() if line.strip()][-5:]


class _Demo:
    """Where one demo run reads and writes: its mode tag, directories and training recipe."""

    def __init__(self):
        self.quick = FLAGS.quick
        self.out_dir = os.path.abspath(os.path.join(REPO, FLAGS.out_dir))
        self.tag = ("quick" if self.quick else "full") + ("" if FLAGS.shift else "_noshift")
        self.run_dir = os.path.join(self.out_dir, f"run_{self.tag}")
        self.logs = os.path.join(self.out_dir, "logs")
        self.flagfile = os.path.join(REPO, FLAGS.flagfile_path)
        self.recipe = _read_flagfile(self.flagfile)
        self.py = sys.executable
        self.export_dir = os.path.abspath(os.path.join(REPO, FLAGS.export_dir))
        self.name = FLAGS.name if FLAGS.shift else f"{FLAGS.name}_noshift"
        self.seconds = {}

    def log(self, stage):
        return os.path.join(self.logs, f"{stage}_{self.tag}.log")


def _train(demo, data):
    """Stage 2: train; returns (summary.json, the training flags, the model file)."""
    if not FLAGS.resume and os.path.isdir(demo.run_dir):
        import shutil
        shutil.rmtree(demo.run_dir)
    train_cmd = [demo.py, "pipelines/train.py", f"--flagfile={demo.flagfile}",
                 f"--train_list={data['train_list']}", f"--val_list={data['val_list']}",
                 f"--data_root={data['root']}", f"--classes_file={data['classes_file']}",
                 f"--num_classes={data['num_classes']}", f"--model_dir={demo.run_dir}",
                 f"--shift={'true' if FLAGS.shift else 'false'}"]
    if demo.quick:
        train_cmd += QUICK_TRAIN
    if FLAGS.attention:
        train_cmd.append(f"--attention={FLAGS.attention}")
    if FLAGS.epochs:
        train_cmd.append(f"--epochs={FLAGS.epochs}")
    _, demo.seconds["train"] = _run("train", train_cmd, demo.log("train"))
    with open(os.path.join(demo.run_dir, "summary.json"), encoding="utf-8") as f:
        train_summary = json.load(f)
    train_args = _read_flagfile(demo.flagfile)
    train_args.update({a[2:].split("=", 1)[0]: a.split("=", 1)[1] for a in train_cmd[3:]})
    model_path = os.path.join(demo.run_dir, "best.keras")
    if not os.path.isfile(model_path):
        model_path = os.path.join(demo.run_dir, "final.keras")
    return train_summary, train_args, model_path


def _clip_shape(demo, train_args):
    """``(num_frames, image_size, resize_shorter)`` of the trained model, as flag strings."""
    num_frames = train_args.get("num_frames", demo.recipe.get("num_frames", "8"))
    image_size = train_args.get("image_size", demo.recipe.get("image_size", "224"))
    resize_shorter = train_args.get("resize_shorter", demo.recipe.get("resize_shorter",
                                                                      image_size))
    return num_frames, image_size, resize_shorter


def _evaluate(demo, data, model_path, shape):
    """Stage 3: evaluate the model on the validation split; returns evaluate.py's report."""
    num_frames, image_size, resize_shorter = shape
    report_path = os.path.join(demo.out_dir, f"eval_{demo.tag}.json")
    eval_cmd = [demo.py, "pipelines/evaluate.py", f"--model={model_path}", "--data_source=video",
                f"--list_file={data['val_list']}", f"--data_root={data['root']}",
                f"--num_classes={data['num_classes']}", f"--num_frames={num_frames}",
                f"--image_size={image_size}", f"--resize_shorter={resize_shorter}",
                "--test_clips=1", "--test_crops=1", f"--report={report_path}",
                f"--confusion_png={os.path.join(demo.out_dir, f'confusion_{demo.tag}.png')}",
                f"--labels={data['classes_file']}"]
    _, demo.seconds["evaluate"] = _run("evaluate", eval_cmd, demo.log("evaluate"))
    with open(report_path, encoding="utf-8") as f:
        return json.load(f)


def _export(demo, data, model_path, shape):
    """Stage 4: export as a SavedModel (and TFLite); returns the SavedModel's version dir."""
    num_frames, image_size, resize_shorter = shape
    export_cmd = [demo.py, "pipelines/export.py", f"--model={model_path}", f"--name={demo.name}",
                  f"--export_dir={demo.export_dir}", f"--labels={data['classes_file']}",
                  f"--num_frames={num_frames}", f"--image_size={image_size}",
                  f"--resize_shorter={resize_shorter}"]
    if FLAGS.tflite:
        export_cmd.append("--tflite")
    text, demo.seconds["export"] = _run("export", export_cmd, demo.log("export"))
    return _export_version_dir(text, os.path.join(demo.export_dir, demo.name))


def _predict(demo, version_dir, val_clip, resize_shorter):
    """Stage 5: classify the real clip and a synthetic one; returns {what: top-5 lines}."""
    predictions = {}
    demo.seconds["predict"] = 0.0
    targets = [("real clip", os.path.join(REPO, FLAGS.real_clip)),
               ("synthetic val clip", val_clip[0])]
    models = [("SavedModel", version_dir)]
    if FLAGS.tflite:
        tfl = _tflite_path(os.path.join(demo.export_dir, demo.name))
        if tfl:
            models.append(("TFLite", tfl))
    for model_kind, model_ref in models:
        for what, clip in targets:
            if model_kind == "TFLite" and what == "real clip":
                continue   # one TFLite run is enough to show it works
            out, dt = _run(f"predict {model_kind} {what}",
                           [demo.py, "pipelines/predict.py", clip, f"--model={model_ref}",
                            "--top_k=5"]
                           + ([f"--resize_shorter={resize_shorter}"] if model_kind == "TFLite"
                              else []), demo.log("predict"))
            demo.seconds["predict"] += dt
            predictions[f"{model_kind}: {what}"] = _top5(out)
    return predictions


def _report(demo, results, wall):
    """Write ``demo_report_<tag>.json`` and print the summary; returns whether top-1 is met."""
    train_summary, train_args, evaluation, version_dir, predictions, val_clip = results
    seconds = demo.seconds
    top1 = evaluation.get("top1")
    min_top1 = FLAGS.min_top1 if FLAGS.min_top1 is not None else (0.0 if demo.quick else 0.9)
    report = {
        "mode": demo.tag, "wall_seconds": round(wall, 1),
        "stage_seconds": {k: round(seconds[k], 1)
                          for k in ("data", "train", "evaluate", "export", "predict")},
        "train": {k: train_summary.get(k) for k in ("epochs", "global_steps", "best_val_top1",
                                                    "clips_per_sec", "train_seconds_total")},
        "eval_top1": top1, "eval_top5": evaluation.get("top5"),
        "num_val_videos": evaluation.get("num_videos"), "min_top1": min_top1,
        "export": version_dir, "predictions": predictions,
        "synthetic_clip_true_label": val_clip[1],
    }
    write_json_atomic(os.path.join(demo.out_dir, f"demo_report_{demo.tag}.json"), report)
    print("\n" + "=" * 72)
    print(f"rnl-keras demo ({demo.tag}) finished in {wall / 60:.1f} min "
          f"(data {seconds['data']:.0f} s, train {seconds['train']:.0f} s, evaluate "
          f"{seconds['evaluate']:.0f} s, export {seconds['export']:.0f} s, predict "
          f"{seconds['predict']:.0f} s)")
    print(f"  model: {train_summary.get('architecture')} "
          f"attention={train_args.get('attention')} "
          f"shift={FLAGS.shift}, {train_summary.get('global_steps')} steps, "
          f"{train_summary.get('clips_per_sec')} clips/s")
    print(f"  validation ({evaluation.get('num_videos')} synthetic videos): top-1 "
          f"{top1:.3f}, top-5 {evaluation.get('top5', 0):.3f}")
    print(f"  export: {version_dir}")
    for key, lines in predictions.items():
        suffix = f" (true: {val_clip[1]})" if "synthetic" in key else ""
        print(f"  {key}{suffix}:")
        for line in lines:
            print(f"      {line}")
    ok = top1 is not None and top1 >= min_top1
    print(f"  target top-1 >= {min_top1:.2f}: {'met' if ok else 'MISSED'}")
    print("=" * 72)
    return ok


def main(argv):
    """Run the five stages, then report; exit 1 when the top-1 target is missed."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    t_start = time.time()
    demo = _Demo()
    os.makedirs(demo.logs, exist_ok=True)
    for script in ("evaluate.py", "export.py", "predict.py"):
        if not os.path.isfile(os.path.join(REPO, "pipelines", script)):
            raise app.UsageError(f"pipelines/{script} is missing: the demo needs it")
    data = _write_data(os.path.join(demo.out_dir, "data_quick" if demo.quick else "data"),
                       QUICK_DATA if demo.quick else FULL_DATA)
    demo.seconds["data"] = time.time() - t_start
    train_summary, train_args, model_path = _train(demo, data)
    shape = _clip_shape(demo, train_args)
    evaluation = _evaluate(demo, data, model_path, shape)
    version_dir = _export(demo, data, model_path, shape)
    val_clip = _first_val_clip(data)
    predictions = _predict(demo, version_dir, val_clip, shape[2])
    results = (train_summary, train_args, evaluation, version_dir, predictions, val_clip)
    if not _report(demo, results, time.time() - t_start):
        sys.exit(1)


def _export_version_dir(text, name_dir):
    """The SavedModel directory export.py printed (else the newest version under ``name_dir``)."""
    for line in reversed(text.splitlines()):
        path = line.strip().split()[-1] if line.strip() else ""
        if path and os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb")):
            return path
    versions = sorted((d for d in os.listdir(name_dir) if d.isdigit()), key=int)
    if not versions:
        raise RuntimeError(f"export.py wrote no version directory under {name_dir}")
    return os.path.join(name_dir, versions[-1])


def _tflite_path(name_dir):
    """The float TFLite file export.py wrote under ``name_dir``, or None."""
    files = sorted(f for f in os.listdir(name_dir)
                   if f.endswith(".tflite") and not f.endswith(".dynamic.tflite"))
    return os.path.join(name_dir, files[-1]) if files else None


def _first_val_clip(data):
    """``(path, class name)`` of the first validation video."""
    with open(data["val_list"], encoding="utf-8") as f:
        rel, label = f.readline().rsplit(None, 1)
    with open(data["classes_file"], encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    return os.path.join(data["root"], rel), names[int(label)]


if __name__ == "__main__":
    app.run(main)
