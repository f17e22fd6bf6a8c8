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
