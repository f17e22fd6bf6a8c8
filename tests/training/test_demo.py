"""``pipelines/demo.py --quick`` runs every stage end to end (data, train, evaluate, export,
predict)."""
import json
import os
import subprocess
import sys

import pytest

from tests.training.helpers import REPO, env

NEEDED = [os.path.join(REPO, "pipelines", s) for s in ("evaluate.py", "export.py", "predict.py")]


@pytest.mark.skipif(not all(map(os.path.isfile, NEEDED)),
                    reason="pipelines/evaluate.py, export.py and predict.py are not written yet")
def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo_out"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "pipelines", "demo.py"), "--quick",
         f"--out_dir={out}", f"--export_dir={tmp_path / 'saved_models'}"],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:]
    report = json.load(open(out / "demo_report_quick.json"))
    assert 0.0 <= report["eval_top1"] <= 1.0 and report["num_val_videos"] == 8
    assert os.path.isfile(os.path.join(report["export"], "saved_model.pb"))
    assert any(k.startswith("SavedModel: real clip") for k in report["predictions"])
    assert any(k.startswith("SavedModel: synthetic") for k in report["predictions"])
    assert all(report["predictions"].values())
    assert report["min_top1"] == 0.0 and report["train"]["global_steps"] >= 1
