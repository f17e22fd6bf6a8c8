"""Convert a released PyTorch (RNL) TSM-ResNet50 checkpoint into a Keras model and/or SavedModel.

    python pipelines/convert_checkpoint.py --torch_checkpoint=TSM_kinetics_RNL_segment8.pth.tar \\
        --num_frames=8 --keras_out=rnl_k400_8f.keras \\
        [--export=rnl_k400 --export_dir=saved_models --labels=rnl_keras/data/kinetics400_classes.txt]

Reads ``.pth`` / ``.pth.tar`` files with PyTorch (imported only here, only for that: `pip install
torch`), or an ``.npz`` holding the state dict's arrays (no torch needed). The checkpoint's
``state_dict`` (``module.base_model.*`` / ``module.new_fc.*`` keys) is mapped onto
``tsm_resnet50`` by ``rnl_keras.checkpoints.from_torch_state_dict``; any missing, unexpected or
mis-shaped key is reported (all at once) and nothing is written. The ``.keras`` file is written to
a temporary name and renamed. ``--export`` then runs the export pipeline
(``pipelines/export.py --model=... --name=... --export_dir=... --labels=...``) on it.

The number of frames is not stored in the checkpoint: pass ``--num_frames`` (16 for the 16-frame
Kinetics model); without it, ``segment<N>`` in the file name is used, else 8.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("torch_checkpoint", None, "PyTorch checkpoint (.pth / .pth.tar) or a .npz of "
                    "its state dict.")
flags.DEFINE_integer("num_frames", None, "Frames per clip T the checkpoint was trained with "
                     "(default: segment<N> in the file name, else 8).")
flags.DEFINE_integer("num_classes", None, "Classifier size (default: read from new_fc.weight).")
flags.DEFINE_integer("image_size", 224, "Input size of the Keras graph (0 = any size).")
flags.DEFINE_string("keras_out", None, "Write the Keras model here (.keras). Default when "
                    "--export is not given: <checkpoint name>.keras in the current directory.")
flags.DEFINE_string("export", None, "Also export a SavedModel under this name.")
flags.DEFINE_string("export_dir", "saved_models", "Root directory of exported SavedModels.")
flags.DEFINE_string("labels", None, "Class names file (one per line) for the export.")
flags.DEFINE_bool("tflite", False, "Ask the export pipeline for a .tflite file as well.")
flags.mark_flag_as_required("torch_checkpoint")


def frames_from_name(path: str) -> int | None:
    match = re.search(r"segment[_-]?(\d+)", os.path.basename(path))
    return int(match.group(1)) if match else None


def default_keras_out(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".pth.tar", ".pth", ".pt", ".tar", ".npz"):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
            break
    return os.path.abspath(name + ".keras")


def save_keras_atomic(model, path: str) -> None:
    """model.save to a temporary file in the target directory, then rename."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".keras", dir=directory)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def run_export(keras_path: str, name: str, export_dir: str, labels: str | None,
               tflite: bool) -> None:
    script = os.path.join(ROOT, "pipelines", "export.py")
    if not os.path.isfile(script):
        raise app.UsageError(f"--export needs the export pipeline {script}, which is not present "
                             f"in this checkout; the Keras model is at {keras_path}")
    cmd = [sys.executable, script, f"--model={keras_path}", f"--name={name}",
           f"--export_dir={export_dir}"]
    if labels:
        cmd.append(f"--labels={labels}")
    if tflite:
        cmd.append("--tflite")
    print("running:", " ".join(cmd), flush=True)
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise SystemExit(f"export failed (exit status {result.returncode}); the Keras model is "
                         f"at {keras_path}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    path = FLAGS.torch_checkpoint
    if not os.path.isfile(path):
        raise app.UsageError(f"--torch_checkpoint={path!r}: no such file")
    if FLAGS.labels and not os.path.isfile(FLAGS.labels):
        raise app.UsageError(f"--labels={FLAGS.labels!r}: no such file")
    num_frames = FLAGS.num_frames or frames_from_name(path) or 8
    if FLAGS.num_frames is None:
        print(f"--num_frames not given: using T={num_frames} "
              f"({'from the file name' if frames_from_name(path) else 'default'})")
    from rnl_keras.checkpoints import (CheckpointError, detect_configuration,
                                       from_torch_state_dict, load_torch_state_dict)

    t0 = time.time()
    try:
        state_dict = load_torch_state_dict(path, warn=lambda m: print(m, file=sys.stderr))
    except ImportError as err:
        raise SystemExit(f"error: {err}") from None
    config = detect_configuration(state_dict)
    print(f"read {len(state_dict)} arrays from {path} in {time.time() - t0:.1f}s: "
          f"attention={config['attention']}, channel gate at {list(config['channel_gate_at'])}, "
          f"shift={config['shift']}, num_classes={config['num_classes']}")
    try:
        model = from_torch_state_dict(state_dict, num_classes=FLAGS.num_classes,
                                      num_frames=num_frames,
                                      image_size=FLAGS.image_size or None)
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    keras_out = FLAGS.keras_out
    temp_dir = None
    if keras_out is None:
        if FLAGS.export:
            temp_dir = tempfile.mkdtemp(prefix="convert_checkpoint_")
            keras_out = os.path.join(temp_dir, f"{FLAGS.export}.keras")
        else:
            keras_out = default_keras_out(path)
    save_keras_atomic(model, keras_out)
    if temp_dir is None:
        print(f"wrote {keras_out} ({model.count_params():,} weights, T={num_frames}, "
              f"input (B, {num_frames}, {FLAGS.image_size}, {FLAGS.image_size}, 3) "
              "ImageNet-normalised RGB)")
    try:
        if FLAGS.export:
            run_export(keras_out, FLAGS.export, FLAGS.export_dir, FLAGS.labels, FLAGS.tflite)
    finally:
        if temp_dir is not None:
            import shutil

            shutil.rmtree(temp_dir, ignore_errors=True)
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    app.run(main)
