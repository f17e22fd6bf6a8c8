"""Each source yields clips of the right shape and range from the shipped real footage."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from rnl_keras.data import DataConfig, make_eval_dataset, make_train_dataset
from rnl_keras.data.config import IMAGENET_MEAN, IMAGENET_STD
from rnl_keras.data.prepare import prepare_shards
from rnl_keras.data.video import probe_num_frames, read_video_frames

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
CLIPS = ["carphone_pristine.mp4", "v_SoccerJuggling_g23_c01.avi",
         "hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi", "WUzgd7C1pWA.mp4"]
LO = (0 - max(IMAGENET_MEAN)) / min(IMAGENET_STD) - 1e-3
HI = (1 - min(IMAGENET_MEAN)) / min(IMAGENET_STD) + 1e-3
SMALL = dict(num_frames=4, image_size=48, resize_shorter=56, seed=0, num_classes=4)


def _video_list(tmp_path):
    return str(_write(tmp_path / "videos.txt", [f"{c} {i}" for i, c in enumerate(CLIPS)]))


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _check_train(ds, n_batches, bs, t=4, s=48):
    batches = list(ds)
    assert len(batches) == n_batches
    labels = []
    for clips, y in batches:
        assert clips.shape == (bs, t, s, s, 3) and clips.dtype == tf.float32
        assert y.dtype == tf.int32
        c = clips.numpy()
        assert LO <= c.min() and c.max() <= HI and c.std() > 0.05   # normalised, not blank
        labels += y.numpy().tolist()
    return labels


@pytest.mark.parametrize("name", CLIPS)
def test_read_video_frames_is_frame_exact(name):
    import av
    path = str(DATA / name)
    with av.open(path, metadata_errors="ignore") as c:
        ref = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    idx = [len(ref) - 1, 3, 0, 60, 61, 3]
    for _ in range(2):        # first read (in order) and second read (seeking when the file allows)
        out = read_video_frames(path, idx)
        assert out.dtype == np.uint8 and out.shape[1:] == ref[0].shape
        for k, i in enumerate(idx):
            np.testing.assert_array_equal(out[k], ref[i])
    assert probe_num_frames(path) >= len(ref)


def test_hmdb51_non_utf8_metadata_decodes():
    import av
    path = str(DATA / CLIPS[2])
    with pytest.raises(UnicodeDecodeError):
        av.open(path)   # documents why we pass metadata_errors="ignore"
    out = read_video_frames(path, [0, 40, 82])
    assert out.shape == (3, 240, 320, 3) and out.std() > 5


def test_video_source(tmp_path):
    cfg = DataConfig(source="video", list_file=_video_list(tmp_path), root=str(DATA), **SMALL)
    labels = _check_train(make_train_dataset(cfg, 2), 2, 2)
    assert sorted(labels) == [0, 1, 2, 3]
    ev = list(make_eval_dataset(DataConfig(**{**cfg.__dict__, "test_crops": 3}), 5))
    vi = np.concatenate([b["video_index"].numpy() for b in ev])
    np.testing.assert_array_equal(vi, np.repeat(np.arange(4), 3))
    assert ev[0]["clip"].shape == (5, 4, 48, 48, 3)


def _make_frame_folders(tmp_path, template="img_{:05d}.jpg", start=1, clips=CLIPS[:2], max_frames=40):
    lines = []
    for label, name in enumerate(clips):
        folder = tmp_path / "frames" / pathlib.Path(name).stem
        folder.mkdir(parents=True)
        frames = read_video_frames(str(DATA / name), list(range(max_frames)), max_shorter=64)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(folder / template.format(i + start), quality=90)
        lines.append(f"{folder.relative_to(tmp_path)} {len(frames)} {label}")
    return str(_write(tmp_path / "frames.txt", lines))


def test_frames_source(tmp_path):
    lst = _make_frame_folders(tmp_path, template="{:05d}.jpg")   # SSv1 naming
    cfg = DataConfig(source="frames", list_file=lst, root=str(tmp_path), frame_template="{:05d}.jpg",
                     **SMALL)
    assert sorted(_check_train(make_train_dataset(cfg, 1), 2, 1)) == [0, 1]
    ev = list(make_eval_dataset(cfg, 8))
    assert ev[0]["clip"].shape == (2, 4, 48, 48, 3)
    np.testing.assert_array_equal(ev[0]["label"], [0, 1])


def test_tfrecord_source_from_videos_and_frames(tmp_path):
    cfg = DataConfig(source="video", list_file=_video_list(tmp_path), root=str(DATA), **SMALL)
    out = tmp_path / "shards"
    res = prepare_shards(cfg, str(out), num_shards=2, resize_shorter=64, show_progress=False)
    assert res["num_examples"] == 4 and len(res["written"]) == 2
    names = sorted(os.listdir(out))
    assert names == ["data-00000-of-00002.tfrecord", "data-00000-of-00002.tfrecord.json",
                     "data-00001-of-00002.tfrecord", "data-00001-of-00002.tfrecord.json"]
    manifest = json.loads((out / names[1]).read_text())
    assert manifest["labels"] == [0, 2] and manifest["complete"]
    scfg = DataConfig(source="tfrecord", list_file=str(out / "*.tfrecord"), **SMALL)
    assert sorted(_check_train(make_train_dataset(scfg, 2), 2, 2)) == [0, 1, 2, 3]
    ev = list(make_eval_dataset(scfg, 16))
    # Shards keep each sample's position in the source list (sample i went to shard i % 2).
    np.testing.assert_array_equal(ev[0]["video_index"], [0, 2, 1, 3])
    np.testing.assert_array_equal(ev[0]["label"], [0, 2, 1, 3])
    # Frame folders -> shards as well.
    fl = _make_frame_folders(tmp_path / "f")
    fcfg = DataConfig(source="frames", list_file=fl, root=str(tmp_path / "f"), **SMALL)
    res = prepare_shards(fcfg, str(tmp_path / "fshards"), num_shards=1, resize_shorter=56,
                         show_progress=False)
    assert res["num_examples"] == 2
    fs = DataConfig(source="tfrecord", list_file=str(tmp_path / "fshards" / "*.tfrecord"), **SMALL)
    assert sorted(_check_train(make_train_dataset(fs, 2), 1, 2)) == [0, 1]


def test_prepare_is_resumable_and_atomic(tmp_path):
    cfg = DataConfig(source="video", list_file=_video_list(tmp_path), root=str(DATA), **SMALL)
    out = tmp_path / "shards"
    prepare_shards(cfg, str(out), num_shards=2, resize_shorter=32, show_progress=False)
    # Simulate a killed run: shard 1 lost its manifest, a stale temp file lies around.
    (out / "data-00001-of-00002.tfrecord.json").unlink()
    (out / "data-00001-of-00002.tfrecord.tmp-999").write_bytes(b"half a shard")
    before = (out / "data-00000-of-00002.tfrecord").stat().st_mtime_ns
    res = prepare_shards(cfg, str(out), num_shards=2, resize_shorter=32, show_progress=False)
    assert res["skipped_shards"] == [str(out / "data-00000-of-00002.tfrecord")]
    assert res["written"] == [str(out / "data-00001-of-00002.tfrecord")]
    assert (out / "data-00000-of-00002.tfrecord").stat().st_mtime_ns == before
    scfg = DataConfig(source="tfrecord", list_file=str(out / "*.tfrecord"), **SMALL)
    assert len(list(make_eval_dataset(scfg, 1))) == 4   # the temp file is never read


def test_prepare_data_cli_flagfile_and_bad_flag(tmp_path):
    flagfile = _write(tmp_path / "prep.flags", [
        f"--list_file={_video_list(tmp_path)}", f"--root={DATA}", f"--output_dir={tmp_path / 'o'}",
        "--num_shards=1", "--resize_shorter=32", "--frame_stride=4"])
    script = str(ROOT / "pipelines" / "prepare_data.py")
    run = subprocess.run([sys.executable, script, f"--flagfile={flagfile}"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "1 shard(s) written" in run.stdout and "4 examples" in run.stdout
    assert "4/4" in run.stderr    # the progress line
    bad = subprocess.run([sys.executable, script, f"--flagfile={flagfile}", "--num_shards=0"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "num_shards" in bad.stderr


def test_seeded_deterministic_pipeline_repeats(synthetic):
    cfg = DataConfig(source="video", list_file=synthetic["train_list"], root=synthetic["root"],
                     num_frames=4, image_size=28, resize_shorter=32, seed=11, deterministic=True,
                     num_parallel_calls=2)
    a = [(x.numpy(), y.numpy()) for x, y in make_train_dataset(cfg, 4)]
    b = [(x.numpy(), y.numpy()) for x, y in make_train_dataset(cfg, 4)]
    assert len(a) == 4
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)
    # Each epoch reshuffles / redraws: two epochs of one repeated dataset differ.
    ds = make_train_dataset(cfg, 16, repeat=True)
    e1, e2 = [y.numpy() for _, y in ds.take(2)]
    assert sorted(e1) == sorted(e2) and not np.array_equal(e1, e2)


def test_input_context_shards_by_sample(synthetic):
    cfg = DataConfig(source="video", list_file=synthetic["val_list"], root=synthetic["root"],
                     num_frames=2, image_size=28, resize_shorter=32)
    seen = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                         num_replicas_in_sync=2)
        seen.append({int(v) for b in make_eval_dataset(cfg, 8, ctx) for v in b["video_index"]})
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(8))
    ctx = tf.distribute.InputContext(2, 0, 2)
    clips, _ = next(iter(make_train_dataset(cfg, 4, ctx)))
    assert clips.shape[0] == 2     # global batch 4 -> 2 per replica
