"""Draw RNL / NL attention maps for chosen reference positions (paper Figures 1, 4 and 5).

    python pipelines/visualize_attention.py --model=rnl.keras --video=clip.mp4 \\
        --points="3:112,80;3:20,200" --block=conv4_block1_rnl --out=attention.png --save_npy
    python pipelines/visualize_attention.py --model=rnl.keras --model2=nl.keras --video=clip.mp4 \\
        --grid=2x2 --grid_frame=3 --out=rnl_vs_nl.png
    python pipelines/visualize_attention.py --checkpoint=train_dir/ckpt --attention=rnl \\
        --num_classes=400 --num_frames=8 --image_size=224 --video=clip.mp4 --grid=3x3

The clip goes through the evaluation's test transform (``rnl_keras.data.eval_transform``): the
centre frame of each of T segments, decoded at full size, the shorter side resized to
--resize_shorter (default S * 256 // 224, as evaluate.py and the exported model) and centre-cropped
to the model's S x S. Points are FRAME:X,Y in that cropped image
(pixels, 0-based), ';'-separated, or a --grid of cell centres on --grid_frame. The figure has one
row per point and one column per frame; each heat-map is the point's attention row (normalised
over the row's frames) blended on the frame, the point marked by a red dot on its frame. With
--model2 (e.g. the NL model) its maps are drawn in a second panel to the right, same points.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rnl_keras  # noqa: E402,F401  (before TensorFlow loads: the package's oneDNN default)

from absl import app, flags  # noqa: E402

from rnl_keras.atomic_io import write_atomic  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Keras model file (.keras).")
flags.DEFINE_string("checkpoint", None, "Instead of --model: a tf.train checkpoint directory (or "
                    "prefix) of the trainer; the model is built from the flags below.")
flags.DEFINE_enum("attention", "rnl", ["rnl", "nl", "se+rnl"], "With --checkpoint: attention.")
flags.DEFINE_integer("num_classes", None, "With --checkpoint: classifier size.")
flags.DEFINE_integer("num_frames", 8, "With --checkpoint: frames per clip T.")
flags.DEFINE_integer("image_size", 224, "With --checkpoint (or a model with a free input size): "
                     "input size.")
flags.DEFINE_integer("resize_shorter", None, "Shorter side before the centre crop (default: "
                     "S * 256 // 224, the evaluation's and the export's default).")
flags.DEFINE_string("block", None, "Attention block (layer name), default the first one.")
flags.DEFINE_string("model2", None, "Optional second model (.keras) drawn side by side, e.g. NL.")
flags.DEFINE_string("block2", None, "Block of --model2 (default its first attention block).")
flags.DEFINE_string("video", None, "Video file.")
flags.DEFINE_string("points", None, "Reference points FRAME:X,Y;FRAME:X,Y (input-image pixels).")
flags.DEFINE_string("grid", None, "Instead of --points: ROWSxCOLS grid of points, e.g. 3x3.")
flags.DEFINE_integer("grid_frame", None, "Frame of the --grid points (default T // 2).")
flags.DEFINE_string("out", "attention.png", "Output PNG.")
flags.DEFINE_bool("save_npy", False, "Also save the raw maps (P, T, hk, wk) next to --out (.npy; "
                  "the second panel's as *_2.npy).")
flags.DEFINE_float("alpha", 0.5, "Heat-map opacity.")
flags.mark_flag_as_required("video")


def load_model(path):
    import keras

    import rnl_keras.layers  # noqa: F401 - registers the custom layers

    if not os.path.isfile(path):
        raise app.UsageError(f"model file {path!r} does not exist")
    return keras.saving.load_model(path, compile=False)


def restore_checkpoint(directory):
    import tensorflow as tf

    from rnl_keras.models.tsm_resnet import tsm_resnet50

    if FLAGS.num_classes is None:
        raise app.UsageError("--checkpoint needs --num_classes (and --attention, --num_frames, "
                             "--image_size as trained)")
    path = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else directory
    if not path:
        raise app.UsageError(f"--checkpoint={directory!r}: no checkpoint found")
    model = tsm_resnet50(FLAGS.num_classes, num_frames=FLAGS.num_frames,
                         attention=FLAGS.attention, image_size=FLAGS.image_size)
    status = tf.train.Checkpoint(model=model).restore(path)
    status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as err:
        raise SystemExit(f"error: {path} does not match a tsm_resnet50(attention="
                         f"{FLAGS.attention!r}, num_classes={FLAGS.num_classes}) model: "
                         f"{str(err)[:500]}") from None
    print(f"restored {path}")
    return model


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if (FLAGS.model is None) == (FLAGS.checkpoint is None):
        raise app.UsageError("give exactly one of --model and --checkpoint")
    if (FLAGS.points is None) == (FLAGS.grid is None):
        raise app.UsageError("give exactly one of --points and --grid")
    if not os.path.isfile(FLAGS.video):
        raise app.UsageError(f"--video={FLAGS.video!r}: no such file")
    import numpy as np

    from rnl_keras import visualization as vis

    model = load_model(FLAGS.model) if FLAGS.model else restore_checkpoint(FLAGS.checkpoint)
    _, num_frames, height, width, _ = model.input_shape
    size = height or FLAGS.image_size
    if height is not None and width != height:
        raise app.UsageError(f"model input {height}x{width} is not square")
    from rnl_keras.export.predictor import VideoReadError
    try:
        frames, clip, indices = vis.load_clip(FLAGS.video, num_frames, size, FLAGS.resize_shorter)
    except (VideoReadError, ValueError) as err:
        raise app.UsageError(f"--video={FLAGS.video}: {err}") from None
    if FLAGS.points:
        points = vis.parse_points(FLAGS.points)
    else:
        frame = num_frames // 2 if FLAGS.grid_frame is None else FLAGS.grid_frame
        points = vis.grid_points(FLAGS.grid, frame, size, size)
    try:
        results = [vis.compute_attention_maps(model, clip, points, FLAGS.block)]
        if FLAGS.model2:
            model2 = load_model(FLAGS.model2)
            if model2.input_shape[1:4] != model.input_shape[1:4]:
                raise app.UsageError(f"--model2 input {model2.input_shape} differs from "
                                     f"--model's {model.input_shape}")
            results.append(vis.compute_attention_maps(model2, clip, points, FLAGS.block2))
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    figure = vis.render_attention_figure(frames, [r.maps for r in results], points,
                                         alpha=FLAGS.alpha)
    write_atomic(FLAGS.out, lambda p: figure.save(p, format="PNG"))
    for k, r in enumerate(results):
        print(f"panel {k + 1}: {r.block}: features {r.feature_grid} (stride {r.stride[0]:g}), "
              f"keys {r.key_grid}, query positions {r.positions.tolist()}")
    print(f"frames {indices.tolist()} of {FLAGS.video}; points {[str(p) for p in points]}")
    print(f"wrote {FLAGS.out} ({figure.size[0]}x{figure.size[1]}: {len(points)} rows x "
          f"{num_frames} frames x {len(results)} panel(s), tiles {size}x{size})")
    if FLAGS.save_npy:
        stem = os.path.splitext(FLAGS.out)[0]
        for k, r in enumerate(results):
            path = f"{stem}.npy" if k == 0 else f"{stem}_{k + 1}.npy"
            write_atomic(path, lambda p, m=r.maps: np.save(p, m))
            print(f"wrote {path} {r.maps.shape}")


if __name__ == "__main__":
    app.run(main)
