"""The spread of h_i = |p_i|^2 / 2 over the positions of a clip, at the input of every RNL block.

    python bench/feature_spread.py --model=run/best.keras --list=val.txt --root=data [--clips=32]
    python bench/feature_spread.py --released [--clips=4]      # the authors' checkpoint layout
    python bench/feature_spread.py --fresh_demo                # a freshly built demo model

p = F_theta(x W_g) are the region summaries of paper eq. (3), the points of the Gaussian similarity
exp(p_i . p_j) of eqs. (5), (9). The retired fixed-offset softmax (``rnl_keras.layers.attention``)
was exact only while h spanned at most 60 within every clip of a batch. This script measures, for
each RNL block, the per-clip spread max_i h_i - min_i h_i and the share of clips (and of batches
of 8) within 60. Models: ``.keras`` files trained here (our own files, loaded
with ``safe_mode`` on) fed centre-cropped clips of a list file (``<video> <label>`` lines, TSN
segment centres); a model in the released configuration with weights in the authors' checkpoint
layout (``tests/checkpoints/released_layout.py``: a random state dict of released scales, N(0, 1)
clips); or a freshly built demo model.

Measured (this repository, 2 CPU cores; ``bench/results/feature_spread.json``): see the docstring
of ``rnl_keras.layers.attention`` for the figures and the decision they support.
"""
import argparse
import os
import sys

import numpy as np

from common import ROOT, write_json

RETIRED_LIMIT = 60.0   # the fixed-offset path's bound on the spread of h within a clip
BATCH = 8


def rnl_probes(model):
    """[(name, layer)] of the RNL blocks (RegionNonLocal, or the RNL inside an SEChain)."""
    from rnl_keras.layers import RegionNonLocal, SEChain

    return [(layer.name, layer) for layer in model.layers
            if isinstance(layer, (RegionNonLocal, SEChain))]


def half_norms(layer, x):
    """h = |p|^2 / 2 (B, N) of the block ``layer`` for its input ``x`` (float64)."""
    from rnl_keras.layers import SEChain

    if isinstance(layer, SEChain):
        x, layer = layer.channel(x, training=False), layer.rnl
    points = np.asarray(layer.embeddings(x)[0], np.float64)
    return 0.5 * np.sum(points ** 2, axis=-1)


def block_spreads(model, clips, only=None):
    """{block name: per-clip spread of h, (num_clips,)} for ``clips`` (B, T, H, W, 3); ``only``:
    that block alone."""
    import keras

    probes = [(name, layer) for name, layer in rnl_probes(model) if only in (None, name)]
    if not probes:
        raise SystemExit(f"feature_spread: {model.name} has no RNL block")
    inputs = keras.Model(model.input, [layer.input for _, layer in probes])
    out = {name: [] for name, _ in probes}
    for start in range(0, len(clips), 4):
        block_inputs = inputs(clips[start:start + 4], training=False)
        block_inputs = block_inputs if isinstance(block_inputs, list) else [block_inputs]
        for (name, layer), x in zip(probes, block_inputs):
            h = half_norms(layer, x)
            out[name].extend(h.max(axis=1) - h.min(axis=1))
    return {name: np.asarray(v) for name, v in out.items()}


def summary(spreads):
    """Statistics of one block's per-clip spreads, and the share the retired path could take."""
    batches = [spreads[i:i + BATCH].max() for i in range(0, len(spreads), BATCH)]
    return {"clips": int(len(spreads)), "min": float(spreads.min()),
            "median": float(np.median(spreads)), "max": float(spreads.max()),
            "clips_within_60": float(np.mean(spreads <= RETIRED_LIMIT)),
            "batches_of_8_within_60": float(np.mean(np.asarray(batches) <= RETIRED_LIMIT))}


def list_clips(list_file, root, count, num_frames, size):
    """The first ``count`` videos of a list file, TSN segment centres, centre crop, normalised."""
    from rnl_keras.data.eval_transform import eval_transform
    from rnl_keras.data.video import probe_num_frames, read_video_frames

    with open(list_file, encoding="utf-8") as f:
        paths = [line.split()[0] for line in f if line.strip()][:count]
    clips = []
    for rel in paths:
        path = os.path.join(root, rel)
        n = probe_num_frames(path)
        indices = [int((i + 0.5) * n / num_frames) for i in range(num_frames)]
        frames = read_video_frames(path, indices)
        clips.append(np.asarray(eval_transform(frames[None], size, size))[0])
    return np.stack(clips).astype("float32")


def released_model(count, seed=0):
    """A released-configuration RNL TSM-R50 with a released-layout state dict; N(0, 1) clips."""
    from rnl_keras.checkpoints import build_released_model, load_state_dict_into
    from tests.checkpoints.released_layout import make_released_state_dict

    rng = np.random.default_rng(seed)
    model = build_released_model(10, num_frames=8, image_size=224)
    load_state_dict_into(model, make_released_state_dict(rng, num_classes=10))
    return model, rng.normal(size=(count, 8, 224, 224, 3)).astype("float32")


def fresh_demo_model(count, seed=0):
    """The demo's model (configs/demo.flags: 2 RNL blocks, 40 x 40) as built, N(0, 1) clips."""
    from rnl_keras.models.tsm_resnet import tsm_resnet50

    model = tsm_resnet50(8, num_frames=8, attention="rnl", image_size=40, stage_blocks=(1, 1, 1, 1),
                         base_width=24, placement=(("res3", 0), ("res4", 0)), dropout=0.0)
    rng = np.random.default_rng(seed)
    return model, rng.normal(size=(count, 8, 40, 40, 3)).astype("float32")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", default=[], help=".keras file (repeatable)")
    parser.add_argument("--list", help="list file of the clips fed to --model")
    parser.add_argument("--root", default="", help="root of the list's relative paths")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--num_frames", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=40)
    parser.add_argument("--released", action="store_true")
    parser.add_argument("--fresh_demo", action="store_true")
    parser.add_argument("--json", default="feature_spread.json")
    args = parser.parse_args(argv)
    import keras

    import rnl_keras.models  # noqa: F401  (registers the model's layers for loading)

    sources = []
    if args.model and not args.list:
        raise SystemExit("feature_spread: --model needs --list (the clips to feed it)")
    for path in args.model:
        if not os.path.isfile(path):
            raise SystemExit(f"feature_spread: --model={path}: no such file")
        clips = list_clips(args.list, args.root, args.clips, args.num_frames, args.image_size)
        sources.append((path, keras.saving.load_model(path, compile=False), clips))
    if args.released:
        sources.append(("released layout (random, released scales)",
                        *released_model(min(args.clips, 4))))
    if args.fresh_demo:
        sources.append(("fresh demo model", *fresh_demo_model(args.clips)))
    results = {}
    for label, model, clips in sources:
        results[label] = {name: summary(s) for name, s in block_spreads(model, clips).items()}
        for name, row in results[label].items():
            print(f"{label} | {name}: spread of |p|^2/2 per clip min {row['min']:.3g} median "
                  f"{row['median']:.3g} max {row['max']:.3g}; clips within 60: "
                  f"{row['clips_within_60']:.0%}, batches of 8: "
                  f"{row['batches_of_8_within_60']:.0%}",
                  flush=True)
    print(f"wrote {write_json(args.json, {'retired_limit': RETIRED_LIMIT, 'results': results})}")


if __name__ == "__main__":
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    sys.exit(main())
