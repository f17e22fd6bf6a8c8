"""Input-pipeline throughput: training clips/s for each source, raw video vs prepared shards.

    python bench/data.py [--epochs=2] [--repeat=8] [--out=bench/results/data.json]

Sets: the real clips shipped in tests/data (each listed --repeat times) as video files, as frame
folders (JPEG, shorter side 256) and as TFRecord shards; and a synthetic set (h264 64x64) as video
files and shards. Prints a table and writes JSON. Times exclude building the dataset and the first
batch (warm-up); the figure is clips/s over the remaining epochs.

Service rows (``--service_workers=1,2``): the same shards read through the tf.data service
(``pipelines/data_service.py``: a dispatcher and N workers started here as subprocesses on
127.0.0.1; decode, sampling and augmentation on the workers, the reader only batches), with the
overhead against the local tfrecord row (``local / service - 1``: > 0 means slower). On one
machine the workers share the CPUs with the reader, so this measures the service's own cost
(serialisation, gRPC, compression), not the scaling it gives with workers on other machines.
The load average is recorded before and after: the machine may be shared.
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
flags.DEFINE_integer("service_passes_of", 800, "Service rows: each timed pass lists the shards "
                     "enough times to hold at least this many clips (a pass has a fixed start and "
                     "end cost of about a second: task discovery and end-of-pass heartbeats).")
flags.DEFINE_list("service_workers", ["1", "2"], "Worker counts of the tf.data service rows "
                  "(empty: no service rows).")
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


def _service_throughput(cfg, batch_size, epochs, workers, log_dir):
    """clips/s of ``cfg``'s shards read through a local dispatcher and ``workers`` workers."""
    from rnl_keras.data import DataConfig, validate_list_file
    from rnl_keras.data.service import service_train_dataset
    from tests.datasets.service_helpers import Cluster
    cluster = Cluster(log_dir, worker_timeout_s=10.0)
    try:
        cluster.start_dispatcher()
        cluster.wait_for_log(cluster.dispatcher, "serving", timeout=120)
        for _ in range(workers):
            cluster.start_worker()
        cluster.wait_for_log(cluster.dispatcher, f"{workers} worker(s) registered", timeout=120)
        shards = list(validate_list_file(cfg))
        per_pass = _num_samples(cfg)
        long_list = os.path.join(log_dir, "service_shards.txt")
        with open(long_list, "w") as f:   # one pass of at least --service_passes_of clips
            for _ in range(max(1, -(-FLAGS.service_passes_of // per_pass))):
                f.writelines(s + "\n" for s in shards)
        cfg = DataConfig(**{**cfg.__dict__, "list_file": long_list})
        clips, dt = 0, 0.0
        for epoch in range(epochs + 1):    # pass 0 is the warm-up
            it = iter(service_train_dataset(cfg, batch_size, cluster.address, None, 30))
            next(it)
            t0 = time.perf_counter()
            n = sum(1 for _ in it)
            if epoch:
                clips, dt = clips + n * batch_size, dt + time.perf_counter() - t0
        return clips / dt
    finally:
        cluster.close()


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
            for _ in range(FLAGS.repeat):
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
        load_before = os.getloadavg()
        for name, source, cfg in sets:
            rate = _throughput(cfg, FLAGS.batch_size, FLAGS.epochs)
            rows.append({"set": name, "source": source, "clips_per_s": round(rate, 1),
                         "T": cfg.num_frames, "crop": cfg.image_size})
            if source != "tfrecord":
                continue
            for workers in (int(w) for w in FLAGS.service_workers):
                srate = _service_throughput(cfg, FLAGS.batch_size, FLAGS.epochs, workers, tmp)
                rows.append({"set": name, "source": f"service:{workers}w",
                             "clips_per_s": round(srate, 1), "T": cfg.num_frames,
                             "crop": cfg.image_size,
                             "overhead_vs_local": round(rate / srate - 1.0, 3)})
    result = {"load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "cpus": os.cpu_count(), "tensorflow": tf.__version__, "batch_size": FLAGS.batch_size,
              "rows": rows, "prepare_real_shards_s": round(prep_real, 2),
              "write_synthetic_s": round(gen_syn, 2), "prepare_synthetic_shards_s": round(prep_syn, 2)}
    print(f"\n{'set':42s} {'source':11s} {'T':>3s} {'crop':>5s} {'clips/s':>9s} {'overhead':>9s}")
    for r in rows:
        over = f"{100 * r['overhead_vs_local']:+8.0f}%" if "overhead_vs_local" in r else ""
        print(f"{r['set']:42s} {r['source']:11s} {r['T']:3d} {r['crop']:5d} "
              f"{r['clips_per_s']:9.1f} {over:>9s}")
    print(f"load average (1, 5, 15 min) before {result['load_average_before']}, after "
          f"{result['load_average_after']} on {os.cpu_count()} CPUs (shared machine)")
    print(f"(synthetic set written in {gen_syn:.1f}s; shards prepared in {prep_syn:.1f}s; "
          f"{os.cpu_count()} CPUs)")
    os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
    with open(FLAGS.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
