"""End-to-end demo on CPU: synthetic data -> train -> evaluate -> export -> predict.

``make demo`` (= ``python pipelines/demo.py``) on a fresh clone:

1. writes a synthetic action dataset (real h264 mp4 files of moving shapes; the class is the motion:
   left / right / up / down, grow / shrink, clockwise / counter-clockwise) into ``demo_out/data``;
2. trains the RNL TSM-ResNet50 with ``configs/demo.flags`` (``pipelines/train.py``);
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
    with open(marker + ".tmp", "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(marker + ".tmp", marker)
    print(f"[data] wrote {spec['num_train']} + {spec['num_val']} videos to {data_dir} in "
          f"{time.time() - t0:.1f} s", flush=True)
    return info


def _read_flagfile(path):
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    t_start = time.time()
    quick = FLAGS.quick
    out_dir = os.path.abspath(os.path.join(REPO, FLAGS.out_dir))
    tag = ("quick" if quick else "full") + ("" if FLAGS.shift else "_noshift")
    run_dir = os.path.join(out_dir, f"run_{tag}")
    logs = os.path.join(out_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    flagfile = os.path.join(REPO, FLAGS.flagfile_path)
    recipe = _read_flagfile(flagfile)
    py = sys.executable
    for script in ("evaluate.py", "export.py", "predict.py"):
        if not os.path.isfile(os.path.join(REPO, "pipelines", script)):
            raise app.UsageError(f"pipelines/{script} is missing: the demo needs it")

    # 1. data
    spec = QUICK_DATA if quick else FULL_DATA
    data = _write_data(os.path.join(out_dir, "data_quick" if quick else "data"), spec)
    t_data = time.time() - t_start

    # 2. train
    if not FLAGS.resume and os.path.isdir(run_dir):
        import shutil
        shutil.rmtree(run_dir)
    train_cmd = [py, "pipelines/train.py", f"--flagfile={flagfile}",
                 f"--train_list={data['train_list']}", f"--val_list={data['val_list']}",
                 f"--data_root={data['root']}", f"--classes_file={data['classes_file']}",
                 f"--num_classes={data['num_classes']}", f"--model_dir={run_dir}",
                 f"--shift={'true' if FLAGS.shift else 'false'}"]
    if quick:
        train_cmd += QUICK_TRAIN
    if FLAGS.attention:
        train_cmd.append(f"--attention={FLAGS.attention}")
    if FLAGS.epochs:
        train_cmd.append(f"--epochs={FLAGS.epochs}")
    _, t_train = _run("train", train_cmd, os.path.join(logs, f"train_{tag}.log"))
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        train_summary = json.load(f)
    train_args = _read_flagfile(flagfile)
    train_args.update({a[2:].split("=", 1)[0]: a.split("=", 1)[1] for a in train_cmd[3:]})
    num_frames = train_args.get("num_frames", recipe.get("num_frames", "8"))
    image_size = train_args.get("image_size", recipe.get("image_size", "224"))
    resize_shorter = train_args.get("resize_shorter", recipe.get("resize_shorter", image_size))
    model_path = os.path.join(run_dir, "best.keras")
    if not os.path.isfile(model_path):
        model_path = os.path.join(run_dir, "final.keras")

    # 3. evaluate
    report_path = os.path.join(out_dir, f"eval_{tag}.json")
    eval_cmd = [py, "pipelines/evaluate.py", f"--model={model_path}", "--data_source=video",
                f"--list_file={data['val_list']}", f"--data_root={data['root']}",
                f"--num_classes={data['num_classes']}", f"--num_frames={num_frames}",
                f"--image_size={image_size}", f"--resize_shorter={resize_shorter}",
                "--test_clips=1", "--test_crops=1", f"--report={report_path}",
                f"--confusion_png={os.path.join(out_dir, f'confusion_{tag}.png')}",
                f"--labels={data['classes_file']}"]
    _, t_eval = _run("evaluate", eval_cmd, os.path.join(logs, f"evaluate_{tag}.log"))
    with open(report_path, encoding="utf-8") as f:
        evaluation = json.load(f)

    # 4. export
    export_dir = os.path.abspath(os.path.join(REPO, FLAGS.export_dir))
    name = FLAGS.name if FLAGS.shift else f"{FLAGS.name}_noshift"
    export_cmd = [py, "pipelines/export.py", f"--model={model_path}", f"--name={name}",
                  f"--export_dir={export_dir}", f"--labels={data['classes_file']}",
                  f"--num_frames={num_frames}", f"--image_size={image_size}",
                  f"--resize_shorter={resize_shorter}"]
    if FLAGS.tflite:
        export_cmd.append("--tflite")
    text, t_export = _run("export", export_cmd, os.path.join(logs, f"export_{tag}.log"))
    version_dir = _export_version_dir(text, os.path.join(export_dir, name))

    # 5. predict
    val_clip = _first_val_clip(data)
    predictions = {}
    t_predict = 0.0
    targets = [("real clip", os.path.join(REPO, FLAGS.real_clip)), ("synthetic val clip",
                                                                    val_clip[0])]
    models = [("SavedModel", version_dir)]
    if FLAGS.tflite:
        tfl = _tflite_path(os.path.join(export_dir, name))
        if tfl:
            models.append(("TFLite", tfl))
    for model_kind, model_ref in models:
        for what, clip in targets:
            if model_kind == "TFLite" and what == "real clip":
                continue   # one TFLite run is enough to show it works
            out, dt = _run(f"predict {model_kind} {what}",
                           [py, "pipelines/predict.py", clip, f"--model={model_ref}", "--top_k=5"]
                           + ([f"--resize_shorter={resize_shorter}"] if model_kind == "TFLite"
                              else []), os.path.join(logs, f"predict_{tag}.log"))
            t_predict += dt
            predictions[f"{model_kind}: {what}"] = _top5(out)

    # report
    wall = time.time() - t_start
    top1 = evaluation.get("top1")
    min_top1 = FLAGS.min_top1 if FLAGS.min_top1 is not None else (0.0 if quick else 0.9)
    report = {
        "mode": tag, "wall_seconds": round(wall, 1),
        "stage_seconds": {"data": round(t_data, 1), "train": round(t_train, 1),
                          "evaluate": round(t_eval, 1), "export": round(t_export, 1),
                          "predict": round(t_predict, 1)},
        "train": {k: train_summary.get(k) for k in ("epochs", "global_steps", "best_val_top1",
                                                    "clips_per_sec", "train_seconds_total")},
        "eval_top1": top1, "eval_top5": evaluation.get("top5"),
        "num_val_videos": evaluation.get("num_videos"), "min_top1": min_top1,
        "export": version_dir, "predictions": predictions,
        "synthetic_clip_true_label": val_clip[1],
    }
    with open(os.path.join(out_dir, f"demo_report_{tag}.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print("\n" + "=" * 72)
    print(f"rnl-keras demo ({tag}) finished in {wall / 60:.1f} min "
          f"(data {t_data:.0f} s, train {t_train:.0f} s, evaluate {t_eval:.0f} s, "
          f"export {t_export:.0f} s, predict {t_predict:.0f} s)")
    print(f"  model: TSM-ResNet50 attention={train_args.get('attention')} shift={FLAGS.shift}, "
          f"{train_summary.get('global_steps')} steps, {train_summary.get('clips_per_sec')} "
          "clips/s")
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
    if not ok:
        sys.exit(1)


def _export_version_dir(text, name_dir):
    for line in reversed(text.splitlines()):
        path = line.strip().split()[-1] if line.strip() else ""
        if path and os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb")):
            return path
    versions = sorted((d for d in os.listdir(name_dir) if d.isdigit()), key=int)
    if not versions:
        raise RuntimeError(f"export.py wrote no version directory under {name_dir}")
    return os.path.join(name_dir, versions[-1])


def _tflite_path(name_dir):
    files = sorted(f for f in os.listdir(name_dir)
                   if f.endswith(".tflite") and not f.endswith(".dynamic.tflite"))
    return os.path.join(name_dir, files[-1]) if files else None


def _first_val_clip(data):
    with open(data["val_list"], encoding="utf-8") as f:
        rel, label = f.readline().rsplit(None, 1)
    with open(data["classes_file"], encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    return os.path.join(data["root"], rel), names[int(label)]


if __name__ == "__main__":
    app.run(main)
