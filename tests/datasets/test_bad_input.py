"""Bad input: a clear message naming the file and the reason, and the rest of the epoch arrives."""
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from rnl_keras.data import (BadSampleLog, DataConfig, ListFileError, make_eval_dataset,
                            make_train_dataset, report_bad_samples, validate_list_file)
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
    bad = tmp_path / "short_by_4.avi"
    bad.write_bytes(src[:int(len(src) * 0.98)])     # header: 240 frames; 236 decode (within 5 %)
    good = _good(synthetic, 2)
    labels, _ = _run_epoch(tmp_path, good + [f"{bad} 4"], sampling="tsn", num_frames=80)   # last
    # segment [237, 240): always past the last decodable frame
    assert sorted(labels) == sorted([4] + [int(g.split()[1]) for g in good])   # used, not dropped
    assert BadSampleLog.count() == 0
    note = BadSampleLog.notes()[0]
    assert str(bad) in note and "header says 240 frames but only 236 decode" in note


def test_truncated_video_is_a_bad_sample_named_by_path(tmp_path, synthetic):
    """Cut in half: an AVI (index lost, 121 of 240 frames decode) and an mp4 whose header is at
    the front (faststart: it opens, then its frames stop) are bad samples, not silently short clips."""
    import av
    from rnl_keras.data.synthetic import pick_codec
    src = (DATA / "v_SoccerJuggling_g23_c01.avi").read_bytes()
    avi = tmp_path / "half.avi"
    avi.write_bytes(src[:len(src) // 2])
    full = tmp_path / "faststart.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as c:
        stream = c.add_stream(pick_codec(), rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": "12"}
        for img in render_clip(1, 48, (64, 64), np.random.default_rng(0)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    mp4 = tmp_path / "half_faststart.mp4"
    mp4.write_bytes(full.read_bytes()[:full.stat().st_size // 2])
    good = _good(synthetic, 2)
    labels, _ = _run_epoch(tmp_path, [good[0], f"{avi} 4", f"{mp4} 5", good[1]], sampling="tsn")
    assert sorted(labels) == sorted(int(g.split()[1]) for g in good)
    messages = BadSampleLog.messages()
    assert BadSampleLog.count() == 2, messages
    assert any(str(avi) in m and "header says 240 frames but only 121 decode" in m for m in messages)
    assert any(str(mp4) in m and "header says 48 frames (48 in its stated duration) but only" in m
               for m in messages)
    # prepare_data skips (and names) them too instead of storing the truncated clips.
    from rnl_keras.data.prepare import prepare_shards
    lst = tmp_path / "p.txt"
    lst.write_text(f"{avi} 4\n{mp4} 5\n{good[0]}\n")
    res = prepare_shards(DataConfig(source="video", list_file=str(lst)), str(tmp_path / "s"),
                         num_shards=1, resize_shorter=0, show_progress=False)
    assert res["num_examples"] == 1 and len(res["bad_samples"]) == 2
    assert str(avi) in res["bad_samples"][0] and str(mp4) in res["bad_samples"][1]


def _stream_copy_trim(src, dst, start_s, duration_s):
    """What ``ffmpeg -ss S -i src -t D -c copy dst`` writes: the packets from the keyframe before
    S on, timestamps shifted so that S is 0 (the pre-roll gets negative ones, which the mp4 muxer
    hides with an edit list). The header then counts the pre-roll frames too."""
    import av
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        offset = int(start_s / ist.time_base)
        end = int((start_s + duration_s) / ist.time_base)
        inp.seek(offset, stream=ist, backward=True, any_frame=False)
        for packet in inp.demux(ist):
            if packet.dts is None:
                continue
            if packet.pts is not None and packet.pts >= end:
                break
            packet.pts -= offset
            packet.dts -= offset
            packet.stream = ost
            out.mux(packet)


def test_stream_copy_trim_with_an_edit_list_is_a_good_clip(tmp_path):
    """A valid clip whose header counts far more frames than it presents (an edit list hides the
    pre-roll of a stream-copy trim: here 218 counted, 119 presented in 3.97 s) is not truncated:
    it is read from the frames it presents, every sampled frame a real one."""
    import av
    from rnl_keras.data.video import probe_num_frames, read_video_frames
    clip = tmp_path / "trimmed.mp4"
    _stream_copy_trim(DATA / "WUzgd7C1pWA.mp4", clip, 3.3, 4.0)
    with av.open(str(clip)) as c:
        header = c.streams.video[0].frames
        presented = sum(1 for _ in c.decode(video=0))
    assert header > 1.5 * presented                    # the case: far beyond the 5% tolerance
    frames = read_video_frames(str(clip), np.linspace(0, probe_num_frames(str(clip)) - 1, 8))
    assert frames.shape[0] == 8 and frames.std() > 1.0
    labels, _ = _run_epoch(tmp_path, [f"{clip} 3"], sampling="tsn")
    assert labels == [3] and BadSampleLog.count() == 0, BadSampleLog.messages()


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


def test_truncated_jpeg_in_folder(tmp_path):
    good = _frame_folder(tmp_path, "v0", 6, 0)
    bad = _frame_folder(tmp_path, "cut", 6, 1)
    jpg = bad / "img_00004.jpg"
    jpg.write_bytes(jpg.read_bytes()[:jpg.stat().st_size // 2])
    labels, _ = _run_epoch(tmp_path, [f"{good} 6 0", f"{bad} 6 1"], source="frames",
                           sampling="dense", dense_stride=1, num_frames=6)
    _assert_skipped(jpg, "unreadable JPEG (truncated or corrupt)", labels, [0])
    assert "function_node" not in BadSampleLog.messages()[0]


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


def test_epoch_end_report():
    # What the trainer prints at the end of every epoch (rnl_keras.data.report_bad_samples).
    BadSampleLog.record("x.mp4", "file not found")
    assert report_bad_samples(1) == "epoch 1: 1 bad sample(s) skipped this epoch, 1 in total"
    seen = BadSampleLog.count()
    assert (report_bad_samples(2, since=seen)
            == "epoch 2: 0 bad sample(s) skipped this epoch, 1 in total")
