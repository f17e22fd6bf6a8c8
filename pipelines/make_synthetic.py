"""Write the synthetic motion dataset: real h264 mp4 clips + train.txt / val.txt / classes.txt.

    python pipelines/make_synthetic.py --out_dir=/tmp/synthetic --num_train=320 --num_val=80

Classes are defined by motion only (move left/right/up/down, grow/shrink, rotate cw/ccw); see
rnl_keras.data.synthetic.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", None, "Output directory (lists, classes.txt, videos/).")
flags.DEFINE_integer("num_train", 320, "Number of training clips.")
flags.DEFINE_integer("num_val", 80, "Number of validation clips.")
flags.DEFINE_integer("num_frames", 24, "Frames per clip.")
flags.DEFINE_integer("height", 64, "Frame height (even, >= 16).")
flags.DEFINE_integer("width", 64, "Frame width (even, >= 16).")
flags.DEFINE_integer("num_classes", 8, "Number of motion classes (1-8).")
flags.DEFINE_integer("fps", 25, "Frame rate written to the files.")
flags.DEFINE_integer("seed", 0, "Random seed; the same seed writes the same clips.")
flags.mark_flag_as_required("out_dir")
for _name in ("num_train", "num_val"):
    flags.register_validator(_name, lambda v: v >= 0, message=f"--{_name} must be >= 0")
flags.register_validator("num_frames", lambda v: v >= 2, message="--num_frames must be >= 2")
flags.register_validator("num_classes", lambda v: 1 <= v <= 8, message="--num_classes must be in [1, 8]")
for _name in ("height", "width"):
    flags.register_validator(_name, lambda v: v >= 16 and v % 2 == 0,
                             message=f"--{_name} must be even and >= 16")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from rnl_keras.data.synthetic import write_synthetic_dataset
    t0 = time.time()
    info = write_synthetic_dataset(FLAGS.out_dir, num_train=FLAGS.num_train, num_val=FLAGS.num_val,
                                   num_frames=FLAGS.num_frames, size=(FLAGS.height, FLAGS.width),
                                   seed=FLAGS.seed, num_classes=FLAGS.num_classes, fps=FLAGS.fps)
    print(f"wrote {FLAGS.num_train} + {FLAGS.num_val} clips ({info['codec']}) to {FLAGS.out_dir} "
          f"in {time.time() - t0:.1f}s: {info['train_list']}, {info['val_list']}, {info['classes_file']}")


if __name__ == "__main__":
    app.run(main)
