"""An epoch is exactly one pass over the training list, whatever bad samples it holds.

Bad samples are filtered out before batching, so a pass yields fewer batches than
``len(list) // batch``; the trainer ends the epoch at the end-of-pass marker instead of reading
into the next pass (which repeated good clips and counted bad files twice: 5 reported as 9).
"""
import json
import os

import numpy as np

from rnl_keras.data import (BadSampleLog, DataConfig, is_end_of_pass, make_train_dataset,
                            pad_end_of_pass)
from tests.datasets.conftest import DATA, synthetic_lines, write_list

SMALL = dict(num_frames=4, image_size=28, resize_shorter=32, num_classes=8, seed=0,
             num_parallel_calls=2)


def _good_and_bad(tmp_path, synthetic):
    """8 good clips (labels 0..7, one each) with 5 bad files between them."""
    good = synthetic_lines(synthetic, k=8)
    bad_files = [tmp_path / "missing.mp4", tmp_path / "empty.mp4", tmp_path / "noise.mp4",
                 tmp_path / "cut.mp4", tmp_path / "text.avi"]
    bad_files[1].write_bytes(b"")
    bad_files[2].write_bytes(np.random.default_rng(0).bytes(20_000))
    src = (DATA / "carphone_pristine.mp4").read_bytes()
    bad_files[3].write_bytes(src[:len(src) // 3])
    bad_files[4].write_text("not a video")
    lines = []
    for i, g in enumerate(good):
        lines.append(g)
        if i < len(bad_files):
            lines.append(f"{bad_files[i]} {i}")
    return write_list(tmp_path / "mixed.txt", lines), bad_files


def test_one_pass_then_end_markers(tmp_path, synthetic):
    lst, bad_files = _good_and_bad(tmp_path, synthetic)
    cfg = DataConfig(source="video", list_file=lst, **SMALL)
    for _ in range(2):                         # every pass: the same accounting
        BadSampleLog.reset()
        labels, markers = [], 0
        for clips, y in pad_end_of_pass(make_train_dataset(cfg, 2)).take(6):
            if bool(is_end_of_pass(y)):
                markers += 1
                assert clips.shape == (2, 4, 28, 28, 3) and not np.any(clips.numpy())
                continue
            assert markers == 0, "a real batch after the end of the pass"
            labels += y.numpy().tolist()
        assert sorted(labels) == list(range(8)) and markers == 2   # each good clip once
        assert BadSampleLog.count() == 5
        for f in bad_files:                                       # each bad file once, by name
            assert sum(str(f) in m for m in BadSampleLog.messages()) == 1


def test_trainer_epoch_is_one_pass(tmp_path, synthetic):
    from tests.training.helpers import TINY, run_train
    lst, _ = _good_and_bad(tmp_path, synthetic)
    model_dir = tmp_path / "run"
    code, out = run_train(TINY + [
        f"--train_list={lst}", "--data_root=", "--num_classes=8", f"--model_dir={model_dir}",
        "--batch_size=2", "--epochs=2", "--checkpoint_every_steps=0", "--seed=1"])
    assert code == 0, out[-3000:]
    with open(os.path.join(model_dir, "summary.json")) as f:
        summary = json.load(f)
    # 13 listed -> nominally 6 steps; the pass holds 8 good clips = 4 steps of 2, every epoch.
    assert summary["steps_per_epoch"] == 6 and summary["global_steps"] == 8, out[-3000:]
    assert [h["bad_samples"] for h in summary["history"]] == [5, 5], out[-3000:]
    assert [h["epoch_steps"] for h in summary["history"]] == [4, 4], summary["history"]
