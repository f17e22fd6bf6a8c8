"""TFRecord shards cut short or corrupted lose no record silently; prepare_data leaves no temporaries.

A shard that yields fewer records than its manifest says is named: ``on_bad_sample="skip"`` counts
every lost record as a bad sample of that shard (each pass), ``"raise"`` stops naming the shard.
Resuming ``prepare_shards`` rewrites a shard cut short since it was written.
"""
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from rnl_keras.data import (BadSampleLog, DamagedShardError, DataConfig, count_samples,
                            make_eval_dataset, make_train_dataset)
from rnl_keras.data.prepare import prepare_shards
from rnl_keras.data.tfrecord import check_shard, scan_tfrecord

from tests.datasets.conftest import synthetic_lines, write_list

SMALL = dict(num_frames=4, image_size=28, resize_shorter=32, seed=0, num_parallel_calls=2)
SHARD0 = "data-00000-of-00002.tfrecord"


@pytest.fixture
def shards(tmp_path, synthetic):
    """6 clips in 2 shards of 3 (labels: shard 0 holds list samples 0, 2, 4)."""
    lst = write_list(tmp_path / "six.txt", synthetic_lines(synthetic, k=6))
    out = tmp_path / "shards"
    prepare_shards(DataConfig(source="video", list_file=lst), str(out), num_shards=2,
                   resize_shorter=0, show_progress=False)
    BadSampleLog.reset()
    return out


def _labels(out, shard):
    with open(out / (shard + ".json")) as f:
        return json.load(f)["labels"]


def _cut(path, keep_fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep_fraction)])


def _cfg(out, **kw):
    return DataConfig(source="tfrecord", list_file=str(out / "*.tfrecord"), **{**SMALL, **kw})


def _train_labels(cfg):
    return sorted(int(y) for _, ys in make_train_dataset(cfg, 1) for y in ys.numpy())


@pytest.mark.parametrize("manifest_has_size", [True, False])
def test_cut_short_shard_skip_counts_and_names_lost_records(shards, manifest_has_size):
    shard = shards / SHARD0
    if not manifest_has_size:    # a manifest of an older prepare_data: the record scan finds it
        m = json.loads((shards / (SHARD0 + ".json")).read_text())
        del m["num_bytes"]
        (shards / (SHARD0 + ".json")).write_text(json.dumps(m))
    _cut(shard)
    assert count_samples(_cfg(shards)) == 6          # what the manifests promise
    readable, problem = check_shard(str(shard))
    assert readable == 1 and "1 of 3 records readable" in problem and "cut short" in problem
    other = _labels(shards, "data-00001-of-00002.tfrecord")
    kept = _labels(shards, SHARD0)[:readable]
    for _ in range(2):           # each pass counts the loss again, once
        BadSampleLog.reset()
        assert _train_labels(_cfg(shards)) == sorted(other + kept)
        assert BadSampleLog.count() == 2
        (msg,) = BadSampleLog.messages()
        assert str(shard) in msg and "1 of 3 records readable, 2 lost" in msg
    BadSampleLog.reset()
    vi = [int(v) for b in make_eval_dataset(_cfg(shards), 4) for v in b["video_index"]]
    assert sorted(vi) == [0, 1, 3, 5] and BadSampleLog.count() == 2


def test_cut_short_shard_raise_names_it(shards):
    _cut(shards / SHARD0)
    with pytest.raises(DamagedShardError, match=rf"{SHARD0}: file is \d+ bytes, its manifest says "
                       r"\d+; 1 of 3 records readable"):
        make_train_dataset(_cfg(shards, on_bad_sample="raise"), 1)


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_damage_after_opening_is_found_while_reading(shards, damage):
    """Cut short (DataLossError: truncated record) or a flipped byte (corrupted record) after the
    shards were checked: the reader still names the shard and counts what it lost."""
    shard = shards / SHARD0
    ds = make_train_dataset(_cfg(shards), 1)
    data = bytearray(shard.read_bytes())
    if damage == "cut":
        shard.write_bytes(bytes(data[:len(data) // 2]))
    else:
        data[len(data) // 2] ^= 0xFF            # inside record 1 (of 0, 1, 2)
        shard.write_bytes(bytes(data))
    labels = sorted(int(y) for _, ys in ds for y in ys.numpy())
    assert len(labels) == 4 and BadSampleLog.count() == 2
    assert str(shard) in BadSampleLog.messages()[0]
    # Cut inside the first record's header: evaluation loses all 3 records of the shard.
    ds = make_eval_dataset(_cfg(shards), 1)
    shard.write_bytes(bytes(data[:10]))
    BadSampleLog.reset()
    assert len(list(ds)) == 3 and BadSampleLog.count() == 3
    assert "0 of 3 records readable, 3 lost" in BadSampleLog.messages()[0]


def test_damage_while_reading_raise_names_the_shard(shards):
    shard = shards / SHARD0
    ds = make_train_dataset(_cfg(shards, on_bad_sample="raise"), 1)
    _cut(shard)
    with pytest.raises(tf.errors.OpError, match=rf"{SHARD0}: TFRecord shard cut short or corrupt: "
                       r"1 of 3 records readable, 2 lost"):
        list(ds)


def test_resume_rewrites_a_shard_cut_short(tmp_path, synthetic, shards):
    lst = write_list(tmp_path / "six.txt", synthetic_lines(synthetic, k=6))
    cfg = DataConfig(source="video", list_file=lst)
    other = shards / "data-00001-of-00002.tfrecord"
    before = other.stat().st_mtime_ns
    _cut(shards / SHARD0, 0.9)
    res = prepare_shards(cfg, str(shards), num_shards=2, resize_shorter=0, show_progress=False)
    assert res["written"] == [str(shards / SHARD0)] and res["skipped_shards"] == [str(other)]
    assert "records readable" in res["rewritten"][str(shards / SHARD0)]
    assert check_shard(str(shards / SHARD0)) == (3, None) and other.stat().st_mtime_ns == before
    assert scan_tfrecord(str(shards / SHARD0)) == (3, None)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_are_removed_and_failures_leave_none(tmp_path, synthetic, shards,
                                                             monkeypatch):
    lst = write_list(tmp_path / "six.txt", synthetic_lines(synthetic, k=6))
    cfg = DataConfig(source="video", list_file=lst)
    pid = _dead_pid()
    stale = [shards / f"{SHARD0}.tmp-{pid}", shards / f"{SHARD0}.json.tmp-{pid}"]
    for p in stale:
        p.write_bytes(b"left by a killed run")
    live = shards / f"{SHARD0}.tmp-{os.getppid()}"      # a running process: not touched
    live.write_bytes(b"another run's shard")
    res = prepare_shards(cfg, str(shards), num_shards=2, resize_shorter=0, show_progress=False)
    assert sorted(res["removed_temporaries"]) == sorted(str(p) for p in stale)
    assert not any(p.exists() for p in stale) and live.exists()
    live.unlink()
    # A failure in the middle of a shard (not a bad sample) names the sample and leaves nothing.
    import rnl_keras.data.tfrecord as tfr
    real = tfr.video_jpegs
    calls = []

    def failing(source, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise MemoryError("out of memory")
        return real(source, path, *a, **k)
    monkeypatch.setattr(tfr, "video_jpegs", failing)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match=r"\.mp4: MemoryError: out of memory"):
        prepare_shards(cfg, str(fresh), num_shards=1, resize_shorter=0, show_progress=False)
    assert os.listdir(fresh) == []


def test_prepare_data_cli_names_a_bad_output_dir(tmp_path, synthetic):
    from tests.datasets.test_sources import ROOT
    lst = write_list(tmp_path / "l.txt", synthetic_lines(synthetic, k=2))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    run = subprocess.run([sys.executable, str(ROOT / "pipelines" / "prepare_data.py"),
                          f"--list_file={lst}", f"--output_dir={blocker}"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and f"--output_dir={blocker} is a file" in run.stderr
    assert "Traceback" not in run.stderr
