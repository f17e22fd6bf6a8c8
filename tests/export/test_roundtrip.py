"""Export round trip: the SavedModel in a process without rnl_keras, and the TFLite files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.export.helpers import LABELS, S, T, sharpen, tiny_tsm

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clean_process_child.py")


def _keras_probs(model, clips):
    from rnl_keras.evaluation.metrics import softmax
    return softmax(np.asarray(model(clips, training=False)))


def test_saved_model_matches_keras_in_a_process_without_rnl_keras(exported, video_clips, tmp_path):
    from rnl_keras.export import preprocess_frames_np, synthetic_clips
    model = exported["model"]
    float_clips = np.stack([preprocess_frames_np(c, S) for c in video_clips])
    # uint8 inputs: every real clip at its own size (any H, W) plus a synthetic batch of 3.
    uint8_inputs = [c[None] for c in video_clips] + [synthetic_clips(3, T, 61, 47, seed=3)]
    np.savez(tmp_path / "in.npz", float_clips=float_clips,
             **{f"uint8_{i}": x for i, x in enumerate(uint8_inputs)})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, CHILD, exported["version_dir"], str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["rnl_keras_modules"] == []
    specs = info["specs"]
    assert specs["serving_default"]["frames"] == {"dtype": "uint8", "shape": [None, T, None, None, 3]}
    assert specs["serving_float"]["clip"] == {"dtype": "float32", "shape": [None, T, S, S, 3]}
    for sig in ("serving_default", "serving_float"):
        outs = specs[sig]["outputs"]
        assert outs["probabilities"] == {"dtype": "float32", "shape": [None, len(LABELS)]}
        assert outs["top_k_indices"]["dtype"] == "int32"
        assert outs["top_k_labels"] == {"dtype": "string", "shape": [None, 5]}
    out = np.load(tmp_path / "out.npz")

    want = _keras_probs(model, float_clips)
    assert want.max(axis=1).min() > 0.3, "test model's probabilities are too flat to be a test"
    np.testing.assert_allclose(out["float/probabilities"], want, atol=1e-4, rtol=0)
    for i, frames in enumerate(uint8_inputs):
        # The graph's resize / crop / normalise, replicated in NumPy, then the Keras model.
        ref = _keras_probs(model, preprocess_frames_np(frames, S))
        got = out[f"uint8_{i}/probabilities"]
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
        idx = out[f"uint8_{i}/top_k_indices"]
        np.testing.assert_array_equal(idx[:, 0], ref.argmax(axis=1))
        np.testing.assert_allclose(out[f"uint8_{i}/top_k_scores"],
                                   np.take_along_axis(got, idx, axis=1), atol=1e-7)
        np.testing.assert_array_equal(out[f"uint8_{i}/top_k_labels"], np.asarray(LABELS)[idx])


def test_tflite_float_and_quantised_parity(exported, loaded, video_clips):
    import tensorflow as tf

    from rnl_keras.export import TFLiteClassifier, preprocess_frames_np
    files = exported["report"]["files"]
    name = os.path.basename(os.path.dirname(files["saved_model"]))
    assert os.path.basename(files["tflite_float"]) == f"{name}-v1.tflite"
    assert os.path.basename(files["tflite_dynamic"]) == f"{name}-v1.dynamic.tflite"
    clips = np.stack([preprocess_frames_np(c, S) for c in video_clips])
    ref = loaded.signatures["serving_float"](clip=tf.constant(clips))["probabilities"].numpy()
    fl = TFLiteClassifier(files["tflite_float"])
    assert (fl.num_frames, fl.image_size, fl.num_classes) == (T, S, len(LABELS))
    got = fl.probabilities(clips)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    q = TFLiteClassifier(files["tflite_dynamic"]).probabilities(clips)
    assert np.all(np.isfinite(q))
    np.testing.assert_array_equal(q.argmax(axis=1), ref.argmax(axis=1))
    assert os.path.getsize(files["tflite_dynamic"]) < 0.6 * os.path.getsize(files["tflite_float"])

    # The export-time report holds the same checks, also written next to the .tflite files.
    report = exported["report"]
    with open(report["report_file"]) as f:
        on_disk = json.load(f)
    assert on_disk["latest_version"] == 1
    tfl = on_disk["versions"]["1"]["tflite"]
    assert tfl["float"]["max_abs_prob_diff"] < 1e-4 and tfl["float"]["finite"]
    assert tfl["dynamic"]["top1_agreement"] == 1.0
    par = on_disk["versions"]["1"]["saved_model_parity"]
    assert par["float_signature_vs_keras"]["max_abs_prob_diff"] < 1e-4
    assert par["uint8_signature_vs_keras_on_numpy_preprocessing"]["max_abs_prob_diff"] < 1e-4
    assert par["graph_vs_numpy_preprocessing_max_abs_diff"] < 1e-5
    assert par["top_k_labels_match_indices"] is True


@pytest.mark.parametrize("attention", ["nl", "se", "gate"])
def test_other_attention_types_export_with_builtin_ops(attention, tmp_path, labels_file,
                                                        video_clips):
    from rnl_keras.export import export_model, preprocess_frames_np
    model = tiny_tsm(attention, seed=1)
    sharpen(model, np.stack([preprocess_frames_np(c, S) for c in video_clips]))
    report = export_model(model, str(tmp_path), attention, labels_file, log=lambda *_: None)
    par = report["saved_model_parity"]
    assert par["float_signature_vs_keras"]["max_abs_prob_diff"] < 1e-4
    assert par["uint8_signature_vs_keras_on_numpy_preprocessing"]["max_abs_prob_diff"] < 1e-4
    assert report["tflite"]["float"]["max_abs_prob_diff"] < 1e-4
    assert report["tflite"]["dynamic"]["finite"]
    assert os.path.isfile(report["files"]["tflite_dynamic"])


def test_numpy_preprocessing_matches_graph():
    import tensorflow as tf

    from rnl_keras.export import preprocess_frames_np, preprocess_frames_tf, resize_bilinear_np
    rng = np.random.default_rng(0)
    for h, w, s, r in [(240, 320, 48, 48), (120, 90, 64, 72), (48, 48, 48, 48), (17, 50, 16, 20),
                       (481, 641, 224, 256)]:
        frames = rng.integers(0, 256, (1, 2, h, w, 3), dtype=np.uint8)
        got = preprocess_frames_np(frames, s, r)
        want = preprocess_frames_tf(tf.constant(frames), s, r).numpy()
        assert got.shape == want.shape == (1, 2, s, s, 3)
        np.testing.assert_allclose(got, want, atol=1e-5)
    img = rng.uniform(0, 255, (2, 13, 29, 3)).astype(np.float32)
    np.testing.assert_allclose(resize_bilinear_np(img, 31, 7),
                               tf.image.resize(img, (31, 7)).numpy(), atol=1e-4)


def test_eval_pipeline_view_matches_serving_preprocessing():
    """With resize_shorter = S*256/224 the uint8 signature sees the eval pipeline's centre view."""
    import tensorflow as tf

    from rnl_keras.data import DataConfig
    from rnl_keras.data import augment
    from rnl_keras.export import preprocess_frames_np
    fn = getattr(augment, "eval_views", None) or getattr(augment, "test_views")
    cfg = DataConfig(source="video", list_file="unused.txt", num_frames=2, image_size=32,
                     resize_shorter=40, test_crops=1)
    frames = np.random.default_rng(1).integers(0, 256, (1, 2, 50, 70, 3), dtype=np.uint8)
    want = fn(tf.constant(frames), cfg).numpy()
    np.testing.assert_allclose(preprocess_frames_np(frames, 32, 40), want, atol=1e-5)
