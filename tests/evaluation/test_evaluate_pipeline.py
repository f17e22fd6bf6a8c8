"""pipelines/evaluate.py end to end on a small synthetic video set (multi-view, 3 crops)."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T, S, K, NUM_VAL = 4, 32, 4, 6
CLIPS, CROPS = 2, 3


def test_evaluate_writes_report_png_and_predictions(tmp_path):
    from rnl_keras.data.synthetic import write_synthetic_dataset
    from rnl_keras.evaluation.confusion import layout
    from rnl_keras.evaluation.evaluator import summarize
    from rnl_keras.export.labels import read_labels
    from rnl_keras.models import tsm_resnet50
    data = write_synthetic_dataset(str(tmp_path / "data"), num_train=0, num_val=NUM_VAL,
                                   num_frames=12, size=(32, 48), seed=0, num_classes=K)
    keras.utils.set_random_seed(0)
    model = tsm_resnet50(K, num_frames=T, attention="rnl", image_size=S, stage_blocks=(1, 1, 1, 1),
                         base_width=8, placement=(("res3", 0),))
    model_path = tmp_path / "best.keras"
    model.save(model_path)
    report_path, png, npz = tmp_path / "out" / "report.json", tmp_path / "cm.png", tmp_path / "p.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "pipelines", "evaluate.py"), f"--model={model_path}",
         "--data_source=video", f"--list_file={data['val_list']}", f"--data_root={data['root']}",
         f"--num_classes={K}", f"--num_frames={T}", f"--image_size={S}", "--resize_shorter=36",
         f"--test_clips={CLIPS}", f"--test_crops={CROPS}", "--batch_size=5",
         f"--report={report_path}", f"--confusion_png={png}", f"--labels={data['classes_file']}",
         f"--predictions={npz}"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(report_path) as f:
        report = json.load(f)
    for key in ("top1", "top5", "single_view", "multi_view", "per_class", "num_videos"):
        assert key in report, key
    assert set(report["single_view"]) >= {"top1", "top5"}
    assert set(report["multi_view"]) >= {"top1", "top5", "views_per_video"}
    assert report["num_videos"] == NUM_VAL
    assert report["multi_view"]["views_per_video"] == CLIPS * CROPS
    assert report["top1"] == report["multi_view"]["top1"]
    names = read_labels(data["classes_file"])
    assert list(report["per_class"]) == names
    assert report["top5"] == 1.0        # K = 4 < 5
    # The report is what summarize() gives on the saved per-view predictions, and views of a
    # video are adjacent with one label.
    preds = np.load(npz)
    assert preds["logits"].shape == (NUM_VAL * CLIPS * CROPS, K)
    vidx = preds["video_index"]
    np.testing.assert_array_equal(vidx, np.repeat(np.arange(NUM_VAL), CLIPS * CROPS))
    np.testing.assert_array_equal(preds["labels"][::CLIPS * CROPS], np.arange(NUM_VAL) % K)
    again, cm = summarize(preds["logits"], preds["labels"], vidx, K, names)
    for key in ("top1", "top5", "single_view", "multi_view", "per_class", "num_videos"):
        assert again[key] == report[key]
    assert report["confusion_matrix"] == cm.tolist() and cm.sum() == NUM_VAL
    # The 6 views of a video differ (2 clips x 3 crops), so multi-view is a real average.
    assert np.abs(preds["logits"][0] - preds["logits"][1]).max() > 1e-6
    with Image.open(png) as img:
        assert img.format == "PNG"
        geo = layout(K, names)
        assert img.size == (geo["width"], geo["height"])


def _evaluate(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, os.path.join(REPO, "pipelines", "evaluate.py"), *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_readme_example_runs_a_224_model_at_256_with_3_crops(tmp_path):
    """README: ``evaluate.py ... --image_size=256 --test_crops=3`` on a model saved at 224 (before:
    a Keras input-shape error). The views are the transform's, the logits those of the same
    weights built at 256."""
    import tensorflow as tf

    from rnl_keras.data.eval_transform import eval_transform
    from rnl_keras.data.synthetic import write_synthetic_dataset
    from rnl_keras.export.predictor import read_clip
    from rnl_keras.models import tsm_resnet50
    data = write_synthetic_dataset(str(tmp_path / "data"), num_train=0, num_val=2, num_frames=8,
                                   size=(40, 64), seed=1, num_classes=K)

    def build(size):
        keras.utils.set_random_seed(2)
        return tsm_resnet50(K, num_frames=2, attention="rnl", image_size=size,
                            stage_blocks=(1, 1, 1, 1), base_width=8, placement=(("res3", 0),))
    model = build(224)
    model.save(tmp_path / "best.keras")
    report_path, npz = tmp_path / "report.json", tmp_path / "p.npz"
    proc = _evaluate(f"--model={tmp_path / 'best.keras'}", f"--list_file={data['val_list']}",
                     f"--data_root={data['root']}", "--image_size=256", "--test_crops=3",
                     f"--report={report_path}", f"--predictions={npz}", "--batch_size=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(report_path) as f:
        report = json.load(f)
    cfg = report["config"]
    assert (cfg["image_size"], cfg["trained_image_size"], cfg["resize_shorter"]) == (256, 224, 256)
    assert cfg["views_per_video"] == 3 and report["multi_view"]["views_per_video"] == 3
    logits = np.load(npz)["logits"]
    assert logits.shape == (2 * 3, K)
    at_256 = build(256)
    at_256.set_weights(model.get_weights())
    with open(data["val_list"]) as f:
        first = f.readline().split()[0]
    frames = read_clip(os.path.join(data["root"], first), 2)
    views = eval_transform(tf.constant(frames[None]), 256, 256, crops=3).numpy()
    want = np.asarray(at_256(views, training=False))
    np.testing.assert_allclose(logits[:3], want, atol=1e-4, rtol=1e-4)


def test_protocol_preset_and_logit_averaging(tmp_path):
    from rnl_keras.data.synthetic import write_synthetic_dataset
    from rnl_keras.evaluation.evaluator import summarize
    from rnl_keras.models import tsm_resnet50
    data = write_synthetic_dataset(str(tmp_path / "data"), num_train=0, num_val=2, num_frames=8,
                                   size=(40, 64), seed=2, num_classes=K)
    keras.utils.set_random_seed(3)
    tsm_resnet50(K, num_frames=2, attention="none", image_size=64, stage_blocks=(1, 1, 1, 1),
                 base_width=8).save(tmp_path / "m.keras")
    report_path, npz = tmp_path / "report.json", tmp_path / "p.npz"
    proc = _evaluate(f"--model={tmp_path / 'm.keras'}", f"--list_file={data['val_list']}",
                     f"--data_root={data['root']}", "--protocol=ssv1", "--score_average=logits",
                     "--image_size=96", f"--report={report_path}", f"--predictions={npz}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(report_path) as f:
        report = json.load(f)
    cfg = report["config"]
    # ssv1 = 2 clips (TSN: centres + starts) x 3 crops; --image_size overrides the preset's 256
    # and gets the default shorter side for a model trained at 64: max(96, 64 * 256 // 224).
    assert (cfg["test_clips"], cfg["twice_sample"], cfg["test_crops"]) == (1, True, 3)
    assert cfg["views_per_video"] == 6 and (cfg["image_size"], cfg["resize_shorter"]) == (96, 96)
    assert cfg["score_average"] == "logits" == report["multi_view"]["score_average"]
    preds = np.load(npz)
    again, _ = summarize(preds["logits"], preds["labels"], preds["video_index"], K,
                         score_average="logits")
    assert again["multi_view"] == report["multi_view"]


def test_evaluate_and_saved_model_agree_on_the_same_clip(tmp_path, capsys):
    """Same video, same settings (1 clip, 1 centre crop, the default shorter side): evaluate.py's
    probabilities and the exported serving_default's agree to 1e-5 (before: ~3% apart)."""
    import tensorflow as tf

    from rnl_keras.evaluation.metrics import softmax
    from rnl_keras.export import export_model, preprocess_frames_np
    from rnl_keras.export.predictor import read_clip
    from tests.export.helpers import LABELS, S, T, VIDEOS, sharpen, tiny_tsm
    model = tiny_tsm("se+rnl", seed=7)
    frames = [read_clip(v, T) for v in VIDEOS]
    sharpen(model, np.stack([preprocess_frames_np(f, S) for f in frames]))
    model.save(tmp_path / "m.keras")
    listing = tmp_path / "val.txt"
    listing.write_text("".join(f"{v} {i % len(LABELS)}\n" for i, v in enumerate(VIDEOS)))
    npz = tmp_path / "p.npz"
    proc = _evaluate(f"--model={tmp_path / 'm.keras'}", f"--list_file={listing}",
                     f"--report={tmp_path / 'r.json'}", f"--predictions={npz}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    eval_probs = softmax(np.load(npz)["logits"])
    report = export_model(model, str(tmp_path / "exports"), "m", _labels(tmp_path), tflite=False,
                          log=lambda *_: None)
    assert report["resize_shorter"] == 54 == S * 256 // 224
    fn = tf.saved_model.load(report["files"]["saved_model"]).signatures["serving_default"]
    served = np.concatenate([fn(frames=tf.constant(f[None]))["probabilities"].numpy()
                             for f in frames])
    assert eval_probs.shape == served.shape == (len(VIDEOS), len(LABELS))
    assert eval_probs.max(axis=1).min() > 0.3, "probabilities too flat to be a test"
    worst = float(np.abs(eval_probs - served).max())
    with capsys.disabled():
        print(f"\nevaluate.py vs SavedModel serving_default: max |prob diff| {worst:.2e}")
    assert worst < 1e-5


def _labels(tmp_path):
    from tests.export.helpers import LABELS
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    return str(path)


def test_broken_clip_with_raise_exits_promptly_naming_it(tmp_path):
    """A clip cut to half its bytes with --on_bad_sample=raise: exit 1 within a bound, the last
    line naming the clip (before: the traceback, then a hang at 0 % CPU in the video pipeline's
    teardown, for ever); with skip the run ends 0 and counts it."""
    import time

    from rnl_keras.data.synthetic import write_synthetic_dataset
    from rnl_keras.models import tsm_resnet50
    data = write_synthetic_dataset(str(tmp_path / "data"), num_train=0, num_val=12, num_frames=24,
                                   size=(32, 48), seed=0, num_classes=K)
    keras.utils.set_random_seed(0)
    tsm_resnet50(K, num_frames=T, attention="rnl", image_size=S, stage_blocks=(1, 1, 1, 1),
                 base_width=8, placement=(("res3", 0),)).save(tmp_path / "m.keras")
    with open(data["val_list"]) as f:
        broken = os.path.join(data["root"], f.read().splitlines()[7].split()[0])
    with open(broken, "rb") as f:
        head = f.read()
    with open(broken, "wb") as f:
        f.write(head[:len(head) // 2])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    args = [sys.executable, os.path.join(REPO, "pipelines", "evaluate.py"),
            f"--model={tmp_path / 'm.keras'}", f"--list_file={data['val_list']}",
            f"--data_root={data['root']}", "--batch_size=2", f"--report={tmp_path / 'r.json'}"]
    t0 = time.monotonic()
    proc = subprocess.run(args + ["--on_bad_sample=raise"], capture_output=True, text=True,
                          env=env, timeout=150)   # the hang was for ever
    assert time.monotonic() - t0 < 150
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("evaluate.py: FAILED [while evaluating --list_file="), last
    assert f"bad sample {broken}" in last and last.endswith("(exit 1)"), last
    assert not (tmp_path / "r.json").exists()
    proc = subprocess.run(args + ["--on_bad_sample=skip"], capture_output=True, text=True,
                          env=env, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "r.json") as f:
        report = json.load(f)
    assert (report["num_videos"], report["skipped_bad_samples"]) == (11, 1)
    assert broken in report["skipped_bad_sample_messages"][0]
