"""Convert a released PyTorch (RNL) TSM-ResNet50 checkpoint into a Keras model and/or SavedModel.

    python pipelines/convert_checkpoint.py --torch_checkpoint=TSM_kinetics_RNL_segment8.pth.tar \\
        --num_frames=8 --keras_out=rnl_k400_8f.keras \\
        [--export=rnl_k400 --export_dir=saved_models \\
         --labels=rnl_keras/data/kinetics400_classes.txt]

Reads ``.pth`` / ``.pth.tar`` files WITHOUT PyTorch and without running code from them (an
allow-list unpickler: containers, tensors and storages only; ``rnl_keras.checkpoints.read_torch_file``),
or an ``.npz`` holding the state dict's arrays. A checkpoint whose pickle needs anything else is
refused with a message naming the file and what it wanted to call; ``--trust_pickled_code`` lifts
that (DANGEROUS: the file can then run any code on this machine; only for files you trust). The
checkpoint's
``state_dict`` (``module.base_model.*`` / ``module.new_fc.*`` keys) is mapped onto
``tsm_resnet50`` by ``rnl_keras.checkpoints.from_torch_state_dict``; any missing, unexpected or
mis-shaped key is reported (all at once) and nothing is written. The ``.keras`` file is written to
a temporary name and renamed. ``--export`` then exports the converted model as a SavedModel (and,
with ``--tflite``, TFLite files) with ``rnl_keras.export.export_model`` (the library behind
``pipelines/export.py``; the script itself is used when the library is unavailable).

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

from rnl_keras.atomic_io import write_atomic  # noqa: E402

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
flags.DEFINE_bool("tflite", False, "With --export: also write the TFLite files.")
flags.DEFINE_integer("resize_shorter", None, "With --export: the uint8 serving signature resizes "
                     "the shorter side to this before the centre crop (default: the crop size; "
                     "256 for 224 is TSM's test view).")
flags.DEFINE_bool("trust_pickled_code", False, "DANGEROUS: let the checkpoint's pickle import "
                  "and call code outside the tensor allow-list (old checkpoints that pickled "
                  "other Python objects). A crafted file can then run anything on this "
                  "machine: only for files from a source you trust.")
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


def run_export(model, keras_path: str, name: str, export_dir: str, labels: str | None,
               tflite: bool, resize_shorter: int | None) -> None:
    """SavedModel (+ TFLite) through rnl_keras.export, or pipelines/export.py when the library
    function is not available."""
    try:
        from rnl_keras.export import export_model
    except ImportError:
        export_model = None
    if export_model is not None:
        try:
            report = export_model(model, export_dir, name, labels, tflite=tflite,
                                  resize_shorter=resize_shorter, source=keras_path, log=print)
        except Exception as err:  # noqa: BLE001 - ExportError, LabelsError, TF errors
            raise SystemExit(f"error: export failed: {type(err).__name__}: {err}"
                             + (f" (the Keras model is at {keras_path})" if keras_path else ""))
        files = report.get("files", {}) if isinstance(report, dict) else {}
        for kind, where in files.items():
            print(f"exported {kind}: {where}")
        return
    script = os.path.join(ROOT, "pipelines", "export.py")
    if not os.path.isfile(script):
        raise app.UsageError(f"--export needs rnl_keras.export or {script}; neither is present. "
                             f"The Keras model is at {keras_path}")
    cmd = [sys.executable, script, f"--model={keras_path}", f"--name={name}",
           f"--export_dir={export_dir}", f"--tflite={str(bool(tflite)).lower()}"]
    if labels:
        cmd.append(f"--labels={labels}")
    if resize_shorter:
        cmd.append(f"--resize_shorter={resize_shorter}")
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
    from rnl_keras.checkpoints import (CheckpointError, UnsafeCheckpointError,
                                       detect_configuration, from_torch_state_dict,
                                       load_torch_state_dict)

    t0 = time.time()
    try:
        state_dict = load_torch_state_dict(path, trust_pickled_code=FLAGS.trust_pickled_code,
                                           warn=lambda m: print(m, file=sys.stderr))
    except (UnsafeCheckpointError, CheckpointError) as err:
        raise SystemExit(f"error: --torch_checkpoint: {err}") from None
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
    if keras_out is None and not FLAGS.export:
        keras_out = default_keras_out(path)
    if keras_out:
        write_atomic(keras_out, model.save)
        print(f"wrote {keras_out} ({model.count_params():,} weights, T={num_frames}, "
              f"input (B, {num_frames}, {FLAGS.image_size}, {FLAGS.image_size}, 3) "
              "ImageNet-normalised RGB)")
    if FLAGS.export:
        temp_dir = None
        if keras_out is None:   # only the CLI fallback needs a file
            temp_dir = tempfile.mkdtemp(prefix="convert_checkpoint_")
            keras_tmp = os.path.join(temp_dir, f"{FLAGS.export}.keras")
        try:
            if temp_dir is not None:
                try:
                    from rnl_keras.export import export_model  # noqa: F401
                except ImportError:
                    write_atomic(keras_tmp, model.save)
            run_export(model, keras_out or (keras_tmp if temp_dir else None), FLAGS.export,
                       FLAGS.export_dir, FLAGS.labels, FLAGS.tflite, FLAGS.resize_shorter)
        finally:
            if temp_dir is not None:
                import shutil

                shutil.rmtree(temp_dir, ignore_errors=True)
    print(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    app.run(main)
