"""Serving inputs of the wrong shape are refused in the graph with a message naming the expected
shape and the shape received (a model server does not check shapes: before, these surfaced as
errors of ops deep inside the model); frames above the export's max_frame_size are refused."""
import re

import numpy as np
import pytest
import tensorflow as tf

from tests.export.helpers import LABELS, S, T, tiny_tsm

BAD_FRAMES = {
    "rank 4": ((T, 50, 60, 3), "another rank"),
    "rank 6": ((1, T, 50, 60, 3, 1), "another rank"),
    "4 channels": ((1, T, 50, 60, 4), "3 RGB channels"),
    "empty batch": ((0, T, 50, 60, 3), r"batch is empty \(B = 0\)"),
    "wrong T": ((1, T + 1, 50, 60, 3), f"exactly T = {T} frames"),
    "0-pixel frames": ((1, T, 0, 60, 3), "no pixels"),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_serving_default_refuses_bad_shapes_readably(case, loaded):
    shape, why = BAD_FRAMES[case]
    fn = loaded.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        fn(frames=tf.zeros(shape, tf.uint8))
    text = str(err.value)
    assert "expected uint8 RGB clips of shape (B >= 1, T = 4, H >= 1, W >= 1, 3)" in text
    assert f"[{' '.join(str(d) for d in shape)}]" in text        # the shape received
    assert re.search(why, text), text


def test_serving_float_refuses_bad_shapes_readably(loaded):
    fn = loaded.signatures["serving_float"]
    for shape, why in [((0, T, S, S, 3), "batch is empty"), ((1, T, S + 8, S + 8, 3), "other dim")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=why) as err:
            fn(clip=tf.zeros(shape, tf.float32))
        assert f"(B >= 1, T = {T}, S = {S}, S = {S}, 3)" in str(err.value)
    good = fn(clip=tf.zeros((2, T, S, S, 3), tf.float32))["probabilities"].numpy()
    np.testing.assert_allclose(good.sum(axis=1), 1.0, atol=1e-5)


def test_max_frame_size_caps_the_frames(tmp_path):
    from rnl_keras.export.saved_model import ServingModule
    module = ServingModule(tiny_tsm("none", seed=4), LABELS, T, S, max_frame_size=64)
    ok = module.serve_uint8(tf.zeros((1, T, 64, 40, 3), tf.uint8))["probabilities"]
    assert ok.shape == (1, len(LABELS))
    for h, w in [(65, 40), (40, 65)]:
        with pytest.raises(tf.errors.InvalidArgumentError, match="max_frame_size = 64") as err:
            module.serve_uint8(tf.zeros((1, T, h, w, 3), tf.uint8))
        assert f"[1 {T} {h} {w} 3]" in str(err.value)
    uncapped = ServingModule(tiny_tsm("none", seed=4), LABELS, T, S, max_frame_size=0)
    big = uncapped.serve_uint8(tf.zeros((1, T, 300, 70, 3), tf.uint8))
    assert big["probabilities"].shape[0] == 1
    assert uncapped.meta()["max_frame_size"] == 0 and module.meta()["max_frame_size"] == 64


def test_export_records_the_cap_and_the_predictor_refuses_larger_frames(exported):
    from rnl_keras.export.input_checks import DEFAULT_MAX_FRAME_SIZE
    from rnl_keras.export.predictor import load_predictor
    assert exported["report"]["max_frame_size"] == DEFAULT_MAX_FRAME_SIZE == 2048
    predictor = load_predictor(exported["version_dir"])
    assert predictor.meta["max_frame_size"] == 2048
    with pytest.raises(ValueError, match="max_frame_size=2048.*--max_shorter"):
        predictor.probabilities(np.zeros((T, 8, 2049, 3), np.uint8))


def test_checks_convert_to_tflite_builtins():
    """The checks and the transform convert with builtin ops only (the static-shape asserts are
    dropped by the converter), so a client may convert the uint8 path too."""
    from rnl_keras.export.input_checks import check_frames
    from rnl_keras.export.preprocess import preprocess_frames_np, preprocess_frames_tf

    @tf.function(input_signature=[tf.TensorSpec([1, T, 60, 80, 3], tf.uint8)])
    def preprocess(frames):
        return {"clip": preprocess_frames_tf(check_frames(frames, T, 100), S)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [preprocess.get_concrete_function()], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    blob = converter.convert()
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_content=blob)
    interp.allocate_tensors()
    frames = np.random.default_rng(0).integers(0, 256, (1, T, 60, 80, 3), dtype=np.uint8)
    interp.set_tensor(interp.get_input_details()[0]["index"], frames)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    # TFLite's (XNNPACK) bilinear kernel rounds differently: 3e-5 on normalised values.
    np.testing.assert_allclose(got, preprocess_frames_np(frames, S), atol=1e-4, rtol=0)


def test_cli_exports_at_another_crop_size_with_a_frame_cap(tmp_path, labels_file):
    """export.py --image_size rebuilds a 48 model at 64 (same weights); --max_frame_size is kept
    in the export's meta and enforced by its graph."""
    import json
    import os
    import subprocess
    import sys

    from tests.export.helpers import REPO
    model = tiny_tsm("rnl", seed=5)
    model.save(tmp_path / "m.keras")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "pipelines", "export.py"),
                           f"--model={tmp_path / 'm.keras'}", "--name=m",
                           f"--export_dir={tmp_path / 'exp'}", f"--labels={labels_file}",
                           "--notflite", "--image_size=64", "--max_frame_size=100"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    version = tmp_path / "exp" / "m" / "1"
    with open(version / "assets" / "export_meta.json") as f:
        meta = json.load(f)
    # Trained at 48: the default shorter side is max(64, 48 * 256 // 224) = 64.
    assert (meta["image_size"], meta["resize_shorter"], meta["max_frame_size"]) == (64, 64, 100)
    loaded = tf.saved_model.load(str(version))
    frames = np.random.default_rng(1).integers(0, 256, (1, T, 80, 100, 3), dtype=np.uint8)
    got = loaded.signatures["serving_default"](frames=tf.constant(frames))["probabilities"]
    from rnl_keras.evaluation.metrics import softmax
    from rnl_keras.evaluation.rebuild import with_input_size
    from rnl_keras.export import preprocess_frames_np
    want = softmax(np.asarray(with_input_size(model, 64)(preprocess_frames_np(frames, 64, 64),
                                                         training=False)))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_frame_size = 100"):
        loaded.signatures["serving_default"](frames=tf.zeros((1, T, 101, 60, 3), tf.uint8))
