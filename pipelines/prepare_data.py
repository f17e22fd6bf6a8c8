"""Convert a video-file or frame-folder list into TFRecord shards of JPEG frames.

    python pipelines/prepare_data.py --source=video --list_file=train.txt --root=/data/k400 \
        --output_dir=/data/k400_shards/train --num_shards=64
    python pipelines/prepare_data.py --flagfile=prepare.flags

Frames are resized (shorter side --resize_shorter) and JPEG-encoded into one tf.train.SequenceExample
per video. Each shard is written to a temporary name and renamed when complete (plus a JSON manifest),
so the run is resumable: rerunning keeps the shards that are complete and still match their manifest
(record count, byte size), rewrites any shard cut short or changed since (naming it), and removes the
temporaries of killed runs. A progress line (done/total, rate, ETA) goes to stderr; every error names
its file and ends the run with a non-zero exit. Train from the shards with
``DataConfig(source="tfrecord", list_file="<output_dir>/*.tfrecord")``.
"""
from __future__ import annotations

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("source", "video", ["video", "frames"],
                  "What the list file describes: video files or frame folders.")
flags.DEFINE_string("list_file", None, "List file: '<path> <label>' (video) or "
                    "'<folder> <num_frames> <label>' (frames) lines.")
flags.DEFINE_string("root", "", "Directory the paths in --list_file are relative to.")
flags.DEFINE_string("frame_template", "img_{:05d}.jpg",
                    "File name template of frame folders, e.g. '{:05d}.jpg' for Something-Something V1.")
flags.DEFINE_integer("frame_index_start", 1, "Number of the first frame file (TSM starts at 1).")
flags.DEFINE_integer("num_classes", None, "If set, labels must lie in [0, num_classes).")
flags.DEFINE_string("output_dir", None, "Directory the shards are written to.")
flags.DEFINE_string("prefix", "data", "Shard file name prefix: <prefix>-00000-of-00008.tfrecord.")
flags.DEFINE_integer("num_shards", 8, "Number of shards (sample i goes to shard i % num_shards).")
flags.DEFINE_integer("resize_shorter", 256, "Resize frames so the shorter side is this (0: keep).")
flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the stored frames (1-100).")
flags.DEFINE_integer("frame_stride", 1, "Keep every n-th frame (1: all frames).")
flags.DEFINE_integer("num_workers", 1, "Processes writing shards in parallel.")
flags.DEFINE_enum("on_bad_line", "raise", ["raise", "skip"],
                  "Malformed list lines / bad labels: stop with all problems listed, or skip them.")
flags.mark_flags_as_required(["list_file", "output_dir"])
flags.register_validator("num_shards", lambda v: v >= 1, message="--num_shards must be >= 1")
flags.register_validator("jpeg_quality", lambda v: 1 <= v <= 100,
                         message="--jpeg_quality must be in [1, 100]")
flags.register_validator("frame_stride", lambda v: v >= 1, message="--frame_stride must be >= 1")
flags.register_validator("num_workers", lambda v: v >= 1, message="--num_workers must be >= 1")
flags.register_validator("resize_shorter", lambda v: v >= 0, message="--resize_shorter must be >= 0")
flags.register_validator("list_file", lambda v: v is None or os.path.isfile(v),
                         message="--list_file does not name an existing file")


def _exit_on_sigterm() -> None:
    """SIGTERM (a scheduler, ``kill``) unwinds like Ctrl-C, so the shard being written is removed."""
    def handler(signum, frame):
        print(f"prepare_data: stopped by signal {signum}; the shard being written is removed, "
              "rerun to resume", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _exit_on_sigterm()
    import tensorflow as tf
    from rnl_keras.data import DataConfig, ListFileError
    from rnl_keras.data.prepare import prepare_shards
    if os.path.exists(FLAGS.output_dir) and not os.path.isdir(FLAGS.output_dir):
        raise app.UsageError(f"--output_dir={FLAGS.output_dir} is a file, not a directory")
    cfg = DataConfig(source=FLAGS.source, list_file=FLAGS.list_file, root=FLAGS.root,
                     frame_template=FLAGS.frame_template, frame_index_start=FLAGS.frame_index_start,
                     num_classes=FLAGS.num_classes, on_bad_line=FLAGS.on_bad_line)
    try:
        result = prepare_shards(cfg, FLAGS.output_dir, num_shards=FLAGS.num_shards,
                                prefix=FLAGS.prefix, resize_shorter=FLAGS.resize_shorter or None,
                                jpeg_quality=FLAGS.jpeg_quality, frame_stride=FLAGS.frame_stride,
                                num_workers=FLAGS.num_workers)
    except ListFileError as e:
        logging.error("%s", e)
        return 2
    except (OSError, RuntimeError, tf.errors.OpError) as e:   # each names its file
        logging.error("prepare_data failed: %s", getattr(e, "message", None) or e)
        return 1
    print(f"{len(result['written'])} shard(s) written ({len(result['rewritten'])} of them damaged "
          f"and rewritten), {len(result['skipped_shards'])} already complete, "
          f"{result['num_examples']} examples, {len(result['bad_samples'])} bad sample(s) "
          f"skipped -> {FLAGS.output_dir}")
    for shard, why in result["rewritten"].items():
        print(f"  rewrote {shard}: {why}")
    for msg in result["bad_samples"]:
        print("  " + msg)
    for msg in result["notes"]:
        print("  kept, with a problem: " + msg)
    return 0


if __name__ == "__main__":
    app.run(main)
