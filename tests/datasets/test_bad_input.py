"""Bad input: a clear message naming the file and the reason, and the rest of the epoch arrives."""
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from rnl_keras.data import (BadSampleLog, DataConfig, ListFileError, make_eval_dataset,
                            make_train_dataset, validate_list_file)
from rnl_keras.data.synthetic import render_clip, write_video

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
SMALL = dict(num_frames=4, image_size=28, resize_shorter=32, num_classes=8, seed=0,
             num_parallel_calls=2)


def _good(synthetic, k=3):
    with open(synthetic["train_list"]) as f:
        rows = [ln.split() for ln in f][:k]
    return [f"{os.path.join(synthetic['root'], p)} {lab}" for p, lab in rows]


def _run_epoch(tmp_path, lines, **kw):
    lst = tmp_path / "list.txt"
    lst.write_text("".join(ln + "\n" for ln in lines))
    cfg = DataConfig(source=kw.pop("source", "video"), list_file=str(lst), **{**SMALL, **kw})
    return [int(y) for _, ys in make_train_dataset(cfg, 1) for y in ys.numpy()], cfg


def _assert_skipped(path, reason, labels, expected_labels):
    assert sorted(labels) == sorted(expected_labels)           # the other samples arrived
    assert BadSampleLog.count() == 1
    msg = BadSampleLog.messages()[0]
    assert str(path) in msg and reason in msg, msg


def _bad_video_case(tmp_path, synthetic, make_bad, reason):
    bad = tmp_path / "bad.mp4"
    make_bad(bad)
    good = _good(synthetic)
    labels, _ = _run_epoch(tmp_path, good[:2] + [f"{bad} 5"] + good[2:])
    _assert_skipped(bad, reason, labels, [int(g.split()[1]) for g in good])


def test_missing_file(tmp_path, synthetic):
    _bad_video_case(tmp_path, synthetic, lambda p: None, "file not found")


def test_zero_byte_file(tmp_path, synthetic):
    _bad_video_case(tmp_path, synthetic, lambda p: p.write_bytes(b""), "empty (0 bytes)")


def test_truncated_mp4(tmp_path, synthetic):
    src = (DATA / "carphone_pristine.mp4").read_bytes()     # moov at the end: header is lost
    _bad_video_case(tmp_path, synthetic, lambda p: p.write_bytes(src[:len(src) // 2]),
                    "cannot open container")


def test_random_bytes(tmp_path, synthetic):
    rnd = np.random.default_rng(0).bytes(50_000)
    _bad_video_case(tmp_path, synthetic, lambda p: p.write_bytes(rnd), "cannot open container")


def test_header_lies_about_frame_count(tmp_path, synthetic):
    src = (DATA / "v_SoccerJuggling_g23_c01.avi").read_bytes()
    bad = tmp_path / "half.avi"
    bad.write_bytes(src[:len(src) // 2])            # header: 240 frames; 121 decode
    good = _good(synthetic, 2)
    labels, _ = _run_epoch(tmp_path, good + [f"{bad} 4"], sampling="tsn")
    assert sorted(labels) == sorted([4] + [int(g.split()[1]) for g in good])   # used, not dropped
    assert BadSampleLog.count() == 0
    note = BadSampleLog.notes()[0]
    assert str(bad) in note and "header says 240 frames but only 121 decode" in note


def test_non_utf8_metadata_and_short_video(tmp_path, synthetic):
    short = tmp_path / "short.mp4"                  # 3 frames < T = 8: repeated, as TSM does
    write_video(str(short), render_clip(0, 3, (32, 32), np.random.default_rng(1)))
    hmdb = DATA / "hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi"
    labels, _ = _run_epoch(tmp_path, [f"{hmdb} 1", f"{short} 2"], num_frames=8)
    assert sorted(labels) == [1, 2] and BadSampleLog.count() == 0


def _frame_folder(root, name, n, label):
    folder = root / name
    folder.mkdir(parents=True)
    frames = render_clip(label, n, (32, 32), np.random.default_rng(label))
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"img_{i + 1:05d}.jpg")
    return folder


def test_unreadable_jpeg_in_folder(tmp_path):
    good = [_frame_folder(tmp_path, f"v{i}", 6, i) for i in range(3)]
    bad = _frame_folder(tmp_path, "bad", 6, 3)
    (bad / "img_00003.jpg").write_bytes(b"this is not a jpeg")
    lines = [f"{g} 6 {i}" for i, g in enumerate(good)] + [f"{bad} 6 3"]
    labels, _ = _run_epoch(tmp_path, lines, source="frames", sampling="dense", dense_stride=1,
                           num_frames=6)
    _assert_skipped(bad / "img_00003.jpg", "unreadable JPEG", labels, [0, 1, 2])


def test_frame_folder_with_fewer_frames_than_listed(tmp_path):
    good = _frame_folder(tmp_path, "v0", 8, 0)
    bad = _frame_folder(tmp_path, "v1", 4, 1)      # the list claims 40 frames
    labels, _ = _run_epoch(tmp_path, [f"{good} 8 0", f"{bad} 40 1"], source="frames")
    _assert_skipped(bad, "not found (the list says 40 frames)", labels, [0])


def test_list_problems_reported_all_at_once(tmp_path, synthetic):
    good = _good(synthetic, 2)
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join([good[0], "no_label_here.mp4", "clip.mp4 seven", "clip.mp4 9",
                              "clip.mp4 -1", good[1]]) + "\n")
    cfg = DataConfig(source="video", list_file=str(lst), **SMALL)
    with pytest.raises(ListFileError) as err:
        make_train_dataset(cfg, 1)       # found before any decoding
    problems = err.value.problems
    assert problems == [
        f"{lst}:2: malformed line 'no_label_here.mp4', expected <path> <label>",
        f"{lst}:3: label 'seven' is not an integer (expected <path> <label>)",
        f"{lst}:4: label 9 outside [0, 8)",
        f"{lst}:5: label -1 outside [0, 8)"]
    for p in problems:
        assert p in str(err.value)
    # on_bad_line="skip": the lines are logged and dropped, the rest trains.
    cfg = DataConfig(source="video", list_file=str(lst), on_bad_line="skip", **SMALL)
    assert len(validate_list_file(cfg)) == 2
    assert sorted(int(y) for _, ys in make_train_dataset(cfg, 1) for y in ys) == \
        sorted(int(g.split()[1]) for g in good)


def test_frames_list_line_problems(tmp_path):
    lst = tmp_path / "f.txt"
    lst.write_text("a 10 1\nb 0 1\nc x 1\nd 5\n")
    with pytest.raises(ListFileError) as err:
        validate_list_file(DataConfig(source="frames", list_file=str(lst), num_classes=2))
    assert [p.split(": ", 1)[0] for p in err.value.problems] == [f"{lst}:2", f"{lst}:3", f"{lst}:4"]


def test_shard_labels_checked_against_num_classes(tmp_path, synthetic):
    from rnl_keras.data.prepare import prepare_shards
    lst = tmp_path / "l.txt"
    lst.write_text("".join(g + "\n" for g in _good(synthetic, 3)))
    prepare_shards(DataConfig(source="video", list_file=str(lst)), str(tmp_path / "s"),
                   num_shards=1, resize_shorter=0, show_progress=False)
    with pytest.raises(ListFileError, match=r"data-00000-of-00001.tfrecord:2: label 2 outside \[0, 2\)"):
        validate_list_file(DataConfig(source="tfrecord", list_file=str(tmp_path / "s" / "*.tfrecord"),
                                      num_classes=2))


def test_raise_mode_stops_with_the_path(tmp_path, synthetic):
    bad = tmp_path / "gone.mp4"
    lst = tmp_path / "l.txt"
    lst.write_text(f"{bad} 1\n")
    cfg = DataConfig(source="video", list_file=str(lst), on_bad_sample="raise", **SMALL)
    with pytest.raises(tf.errors.OpError, match="gone.mp4: file not found"):
        list(make_train_dataset(cfg, 1))


def test_eval_skips_bad_videos_and_keeps_indices(tmp_path, synthetic):
    good = _good(synthetic, 2)
    lst = tmp_path / "l.txt"
    lst.write_text(f"{good[0]}\n{tmp_path / 'gone.mp4'} 3\n{good[1]}\n")
    cfg = DataConfig(source="video", list_file=str(lst), **SMALL)
    vi = [int(v) for b in make_eval_dataset(cfg, 4) for v in b["video_index"]]
    assert vi == [0, 2] and BadSampleLog.count() == 1


def test_epoch_end_report(tmp_path, synthetic):
    from rnl_keras.data.callbacks import BadSampleReport
    cb = BadSampleReport()
    BadSampleLog.record("x.mp4", "file not found")
    logs = {}
    cb.on_epoch_end(0, logs)
    assert "epoch 1: 1 bad sample(s) skipped this epoch, 1 in total" == cb.last_message
    assert logs["bad_samples"] == 1.0
    cb.on_epoch_end(1, {})
    assert cb.last_message.startswith("epoch 2: 0 bad sample(s)")
