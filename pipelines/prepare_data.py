"""Convert a video-file or frame-folder list into TFRecord shards of JPEG frames.

    python pipelines/prepare_data.py --source=video --list_file=train.txt --root=/data/k400 \
        --output_dir=/data/k400_shards/train --num_shards=64
    python pipelines/prepare_data.py --flagfile=prepare.flags

Frames are resized (shorter side --resize_shorter) and JPEG-encoded into one tf.train.SequenceExample
per video. Each shard is written to a temporary name and renamed when complete (plus a JSON manifest),
so the run is resumable: rerunning skips shards that are already complete. Train from the shards with
``DataConfig(source="tfrecord", list_file="<output_dir>/*.tfrecord")``.
"""
from __future__ import annotations

import os
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from rnl_keras.data import DataConfig, ListFileError
    from rnl_keras.data.prepare import prepare_shards
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
    print(f"{len(result['written'])} shard(s) written, {len(result['skipped_shards'])} already "
          f"complete, {result['num_examples']} examples, {len(result['bad_samples'])} bad sample(s) "
          f"skipped -> {FLAGS.output_dir}")
    for msg in result["bad_samples"]:
        print("  " + msg)
    return 0


if __name__ == "__main__":
    app.run(main)
