"""Input-pipeline throughput: training clips/s for each source, raw video vs prepared shards.

    python bench/data.py [--epochs=2] [--repeat=8] [--out=bench/results/data.json]

Sets: the real clips shipped in tests/data (each listed --repeat times) as video files, as frame
folders (JPEG, shorter side 256) and as TFRecord shards; and a synthetic set (h264 64x64) as video
files and shards. Prints a table and writes JSON. Times exclude building the dataset and the first
batch (warm-up); the figure is clips/s over the remaining epochs.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 2, "Epochs timed per source (after a one-batch warm-up).")
flags.DEFINE_integer("repeat", 8, "Times each shipped real clip is listed.")
flags.DEFINE_integer("num_synthetic", 96, "Synthetic clips.")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_integer("num_frames", 8, "T, frames per clip.")
flags.DEFINE_string("out", str(ROOT / "bench" / "results" / "data.json"), "JSON output path.")

CLIPS = ["carphone_pristine.mp4", "v_SoccerJuggling_g23_c01.avi",
         "hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi", "WUzgd7C1pWA.mp4"]


def _throughput(cfg, batch_size, epochs):
    from rnl_keras.data import make_train_dataset
    ds = make_train_dataset(cfg, batch_size, repeat=True)
    it = iter(ds)
    next(it)                                     # warm-up: graph tracing, first decode
    steps = 0
    per_epoch = max(1, _num_samples(cfg) // batch_size)
    t0 = time.perf_counter()
    for _ in range(per_epoch * epochs):
        next(it)
        steps += 1
    dt = time.perf_counter() - t0
    return steps * batch_size / dt


def _num_samples(cfg):
    from rnl_keras.data import validate_list_file
    if cfg.source != "tfrecord":
        return len(validate_list_file(cfg))
    return sum(json.load(open(s + ".json"))["num_examples"] for s in validate_list_file(cfg))


def _frame_folders(tmp, video_lines, data_dir):
    from PIL import Image
    from rnl_keras.data.video import iter_video_frames
    lines = []
    for i, name in enumerate(CLIPS):
        folder = os.path.join(tmp, "frames", pathlib.Path(name).stem)
        os.makedirs(folder)
        n = 0
        for n, rgb in enumerate(iter_video_frames(str(data_dir / name), max_shorter=256), start=1):
            Image.fromarray(rgb).save(os.path.join(folder, f"img_{n:05d}.jpg"), quality=90)
        lines.append((folder, n, i))
    path = os.path.join(tmp, "frames.txt")
    with open(path, "w") as f:
        for _ in range(FLAGS.repeat):
            f.writelines(f"{fo} {n} {lab}\n" for fo, n, lab in lines)
    return path


def main(argv):
    del argv
    import tensorflow as tf
    from rnl_keras.data import DataConfig
    from rnl_keras.data.prepare import prepare_shards
    from rnl_keras.data.synthetic import write_synthetic_dataset
    data_dir = ROOT / "tests" / "data"
    rows = []
    common = dict(num_frames=FLAGS.num_frames, seed=0, num_classes=8)
    with tempfile.TemporaryDirectory() as tmp:
        vlist = os.path.join(tmp, "videos.txt")
        with open(vlist, "w") as f:
            for _ in range(FLAGS.repeat):
                f.writelines(f"{c} {i}\n" for i, c in enumerate(CLIPS))
        real = DataConfig(source="video", list_file=vlist, root=str(data_dir), image_size=224,
                          resize_shorter=256, **common)
        t0 = time.perf_counter()
        unique = os.path.join(tmp, "unique.txt")
        with open(unique, "w") as f:
            f.writelines(f"{c} {i}\n" for i, c in enumerate(CLIPS))
        ucfg = DataConfig(**{**real.__dict__, "list_file": unique})
        prepare_shards(ucfg, os.path.join(tmp, "real_shards"), num_shards=4, resize_shorter=256,
                       show_progress=False)
        prep_real = time.perf_counter() - t0
        flist = _frame_folders(tmp, vlist, data_dir)
        # Shards hold each clip once: repeat the shard list so an epoch has as many clips.
        shard_list = os.path.join(tmp, "real_shards.txt")
        with open(shard_list, "w") as f:
            shards = sorted(str(p) for p in pathlib.Path(tmp, "real_shards").glob("*.tfrecord"))
            f.writelines(s + "\n" for s in shards)
        sets = [
            ("real clips (4 files x %d)" % FLAGS.repeat, "video", real),
            ("real clips", "frames", DataConfig(**{**real.__dict__, "source": "frames",
                                                   "list_file": flist, "root": ""})),
            ("real clips", "tfrecord", DataConfig(**{**real.__dict__, "source": "tfrecord",
                                                     "list_file": shard_list, "root": ""})),
        ]
        t0 = time.perf_counter()
        syn = write_synthetic_dataset(os.path.join(tmp, "syn"), num_train=FLAGS.num_synthetic,
                                      num_val=0, num_frames=24, size=(64, 64), seed=0)
        gen_syn = time.perf_counter() - t0
        scfg = DataConfig(source="video", list_file=syn["train_list"], root=syn["root"],
                          image_size=56, resize_shorter=64, **common)
        t0 = time.perf_counter()
        prepare_shards(scfg, os.path.join(tmp, "syn_shards"), num_shards=4, resize_shorter=64,
                       show_progress=False)
        prep_syn = time.perf_counter() - t0
        sets += [
            (f"synthetic ({FLAGS.num_synthetic} x 24f 64x64 h264)", "video", scfg),
            ("synthetic", "tfrecord", DataConfig(**{**scfg.__dict__, "source": "tfrecord",
                                                   "list_file": os.path.join(tmp, "syn_shards",
                                                                             "*.tfrecord"),
                                                   "root": ""})),
        ]
        for name, source, cfg in sets:
            rate = _throughput(cfg, FLAGS.batch_size, FLAGS.epochs)
            rows.append({"set": name, "source": source, "clips_per_s": round(rate, 1),
                         "T": cfg.num_frames, "crop": cfg.image_size})
    result = {"cpus": os.cpu_count(), "tensorflow": tf.__version__, "batch_size": FLAGS.batch_size,
              "rows": rows, "prepare_real_shards_s": round(prep_real, 2),
              "write_synthetic_s": round(gen_syn, 2), "prepare_synthetic_shards_s": round(prep_syn, 2)}
    print(f"\n{'set':42s} {'source':9s} {'T':>3s} {'crop':>5s} {'clips/s':>9s}")
    for r in rows:
        print(f"{r['set']:42s} {r['source']:9s} {r['T']:3d} {r['crop']:5d} {r['clips_per_s']:9.1f}")
    print(f"(synthetic set written in {gen_syn:.1f}s; shards prepared in {prep_syn:.1f}s; "
          f"{os.cpu_count()} CPUs)")
    os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
    with open(FLAGS.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
