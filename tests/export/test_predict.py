"""pipelines/predict.py on a real clip (SavedModel and TFLite) and its errors."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.export.helpers import LABELS, REPO, VIDEOS

PREDICT = os.path.join(REPO, "pipelines", "predict.py")


def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, PREDICT, *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _parse(stdout):
    rows = []
    for line in stdout.strip().splitlines():
        rank, name, score, _ = line.split("\t")
        rows.append((int(rank), name, float(score)))
    return rows


@pytest.fixture(scope="module")
def reference_top5(loaded, video_clips):
    out = loaded.signatures["serving_default"](frames=tf.constant(video_clips[0][None]))
    names = [b.decode("utf-8") for b in out["top_k_labels"].numpy()[0]]
    return names, out["top_k_scores"].numpy()[0]


@pytest.mark.parametrize("which", ["saved_model", "tflite"])
def test_predict_prints_top5_names_and_scores(which, exported, reference_top5):
    model_dir = os.path.dirname(exported["version_dir"])   # base dir: latest version is used
    model = model_dir if which == "saved_model" else exported["report"]["files"]["tflite_float"]
    proc = _run(VIDEOS[0], f"--model={model}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _parse(proc.stdout)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert all(name in LABELS for _, name, _ in rows)
    scores = [s for _, _, s in rows]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-3
    names, ref_scores = reference_top5
    assert [r[1] for r in rows][:2] == names[:2]
    np.testing.assert_allclose(scores, ref_scores, atol=2e-4)   # printed with 4 decimals


def test_predict_broken_video_names_the_file(exported, tmp_path):
    broken = tmp_path / "broken clip.mp4"
    with open(VIDEOS[0], "rb") as f:
        head = f.read(2000)
    broken.write_bytes(b"\x00" * 64 + head[64:])     # a damaged header: no container found
    proc = _run(str(broken), f"--model={exported['version_dir']}")
    assert proc.returncode != 0
    assert str(broken) in proc.stderr and "cannot read video" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_predictor_errors_name_the_model(tmp_path, exported):
    from rnl_keras.export.labels import LabelsError
    from rnl_keras.export.predictor import ModelLoadError, load_predictor
    missing = tmp_path / "nothing_here"
    with pytest.raises(ModelLoadError, match="nothing_here"):
        load_predictor(str(missing))
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="empty_dir.*saved_model.pb"):
        load_predictor(str(empty))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelLoadError, match="junk.tflite"):
        load_predictor(str(junk))
    # A .tflite copied away from its version directory needs --labels.
    lonely = tmp_path / "copy.tflite"
    shutil.copy(exported["report"]["files"]["tflite_float"], lonely)
    with pytest.raises(LabelsError, match="--labels"):
        load_predictor(str(lonely))
    labels = tmp_path / "l.txt"
    labels.write_text("\n".join(LABELS))
    pred = load_predictor(str(lonely), labels=str(labels))
    # Without the export's meta the shorter side is the one default: S * 256 // 224.
    assert pred.labels == LABELS and pred.resize_shorter == pred.image_size * 256 // 224
