"""Full-model speed: TSM-R50 baseline vs +5 RNL (fresh and trained-like weights, with / without
key sub-sampling, with query_chunk_size=1024: bounded memory, recomputing backward in training)
vs +5 NL.

    python bench/model.py [--quick] [--iters=2] [--json=bench/results/model.json]

8 x 224 x 224 clips, 400 classes, the paper's backbone (torchvision layout, no conv biases),
float32 (and mixed_bfloat16 inference for the baseline and +5 RNL). Inference: clips/s at batch 1
and 8 (tf.function, training=False). Training: seconds per SGD step at batch 1 (forward, backward,
update). All models are built first and timed in interleaved rounds (each round times every model
once), so a transient disturbance of a shared machine cannot fall on one model only; warm-up
calls (tracing) are excluded; times are minima over the rounds; all ratios to the baseline come
from this same run. Multiply-adds from rnl_keras.profiling.

Weights: random (fresh) except "rnl_trained_like": the +5 RNL model with its blocks made
trained-like (``trained_like.py``: block inputs whose |p|^2 / 2 spreads over ``TRAINED_SPREAD``
within a clip, as in the models trained here, and BN gamma 1). Its time is the one a trained model
gets; it should equal "rnl" (the attention's path depends on shapes only).
"""
import argparse
import statistics
import sys

import numpy as np

from common import machine, set_policy, time_fn, write_json

MODELS = {"baseline": ("none", {}), "rnl": ("rnl", {}),
          "rnl_trained_like": ("rnl", {}),
          "rnl_key_subsample": ("rnl", {"rnl_kwargs": {"key_subsample": True}}),
          "rnl_chunk1024": ("rnl", {"rnl_kwargs": {"query_chunk_size": 1024}}),
          "nl": ("nl", {})}
PAPER = {"resnet_variant": "torchvision", "use_conv_bias": False}


def build(name, dtype):
    from rnl_keras.models.tsm_resnet import tsm_resnet50

    set_policy(dtype)
    attention, kwargs = MODELS[name]
    model = tsm_resnet50(400, num_frames=8, attention=attention, image_size=224,
                         name=f"{name}_{dtype}", **PAPER, **kwargs)
    set_policy("float32")
    if name.endswith("trained_like"):
        from trained_like import trained_like_model

        clip = np.random.default_rng(0).normal(size=(1, 8, 224, 224, 3)).astype("float32")
        spreads = trained_like_model(model, clip)
        print(f"{name}:{dtype} median |p|^2/2 spread per block: "
              + ", ".join(f"{k} {v:.3g}" for k, v in spreads.items()), flush=True)
    return model


def train_step_fn(model):
    import keras
    import tensorflow as tf

    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    weights = model.trainable_weights

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss
    return step


def timed_rounds(fns, args, rounds):
    """Interleaved timing: every round times each function once, in turn (after one warm-up
    call each), so a disturbance of the shared machine hits one round of every model rather than
    all of one model's measurements. Returns {key: time_fn-like dict over the rounds}."""
    walls = {key: [] for key in fns}
    cpus = {key: [] for key in fns}
    for key, fn in fns.items():
        time_fn(fn, *args, warmup=1, iters=1)   # tracing + a warm-up call, not counted
    for _ in range(rounds):
        for key, fn in fns.items():
            t = time_fn(fn, *args, warmup=0, iters=1)
            walls[key].append(t["min_s"])
            cpus[key].append(t["cpu_s"])
    return {key: {"min_s": min(walls[key]), "median_s": statistics.median(walls[key]),
                  "cpu_s": min(cpus[key]), "iters": rounds} for key in fns}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 timing rounds instead of --rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--bf16_models", default="baseline,rnl_trained_like")
    parser.add_argument("--json", default="model.json")
    args = parser.parse_args(argv)
    import tensorflow as tf

    from rnl_keras.profiling import count_macs

    rounds = 2 if args.quick else args.rounds
    results = {"machine": machine(), "units": {"infer": "seconds per clip (min wall over the "
                                               "interleaved rounds); cpu_s = process CPU-seconds "
                                               "(all threads), less sensitive to other jobs",
                                               "train": "seconds per step, batch 1"}, "models": {}}
    print(results["machine"])
    rng = tf.random.Generator.from_seed(0)
    jobs = [(m, "float32") for m in args.models.split(",")]
    jobs += [(m, "bfloat16") for m in args.bf16_models.split(",") if m]
    models = {f"{name}:{dtype}": build(name, dtype) for name, dtype in jobs}
    for key, model in models.items():
        macs = count_macs(model)
        results["models"][key] = {"dtype": key.split(":")[1], "true_gmacs": macs["true"] / 1e9,
                                  "paper_gmacs": macs["paper"] / 1e9,
                                  "executed_gmacs": macs["executed"] / 1e9}
    infer = {key: tf.function(lambda x, m=model: m(x, training=False))
             for key, model in models.items()}
    for batch in (1, 8):
        x = rng.normal((batch, 8, 224, 224, 3))
        for key, t in timed_rounds(infer, (x,), rounds).items():
            results["models"][key][f"infer_b{batch}"] = {
                "s_per_clip": t["min_s"] / batch, "clips_per_s": batch / t["min_s"], **t}
            print(f"{key:<28} infer b{batch}: {t['min_s'] / batch:.3f} s/clip (median "
                  f"{t['median_s'] / batch:.3f}, cpu {t['cpu_s'] / batch:.3f})", flush=True)
    steps = {key: train_step_fn(model) for key, model in models.items()
             if key.endswith(":float32")}
    x, y = rng.normal((1, 8, 224, 224, 3)), tf.constant([3])
    for key, t in timed_rounds(steps, (x, y), rounds).items():
        results["models"][key]["train_b1"] = {"s_per_step": t["min_s"], **t}
        print(f"{key:<28} train b1: {t['min_s']:.3f} s/step (median {t['median_s']:.3f})",
              flush=True)
    base = results["models"].get("baseline:float32")
    print(f"\n{'model':<28} {'true GMACs':>10} {'MAC ratio':>9} | {'b1 s/clip':>9} {'b8 s/clip':>9} "
          f"{'b8 ratio':>8} | {'train s':>7} {'ratio':>6}")
    for key, row in results["models"].items():
        ratios = {}
        if base:
            ratios = {"macs": row["true_gmacs"] / base["true_gmacs"],
                      "infer_b1": row["infer_b1"]["s_per_clip"] / base["infer_b1"]["s_per_clip"],
                      "infer_b8": row["infer_b8"]["s_per_clip"] / base["infer_b8"]["s_per_clip"]}
            ratios["infer_b8_cpu"] = row["infer_b8"]["cpu_s"] / base["infer_b8"]["cpu_s"]
            ratios["infer_b1_cpu"] = row["infer_b1"]["cpu_s"] / base["infer_b1"]["cpu_s"]
            if "train_b1" in row:
                ratios["train_b1"] = row["train_b1"]["s_per_step"] / base["train_b1"]["s_per_step"]
        fp32 = results["models"].get(key.split(":")[0] + ":float32")
        if row["dtype"] == "bfloat16" and fp32:
            ratios["bf16_speedup_b8"] = fp32["infer_b8"]["s_per_clip"] / row["infer_b8"]["s_per_clip"]
            ratios["bf16_speedup_b8_cpu"] = fp32["infer_b8"]["cpu_s"] / row["infer_b8"]["cpu_s"]
        row["ratios"] = ratios
        train = row.get("train_b1", {}).get("s_per_step")
        print(f"{key:<28} {row['true_gmacs']:10.2f} {ratios.get('macs', 0):9.2f} | "
              f"{row['infer_b1']['s_per_clip']:9.3f} {row['infer_b8']['s_per_clip']:9.3f} "
              f"{ratios.get('infer_b8', 0):8.2f} | "
              f"{train if train else float('nan'):7.3f} {ratios.get('train_b1', float('nan')):6.2f}"
              + (f" | cpu-s ratio b1 {ratios['infer_b1_cpu']:.2f} b8 {ratios['infer_b8_cpu']:.2f}"
                 if "infer_b8_cpu" in ratios else "")
              + (f"  bf16 speed-up b8: {ratios['bf16_speedup_b8']:.2f}x"
                 if "bf16_speedup_b8" in ratios else ""))
    print(f"wrote {write_json(args.json, results)}")


if __name__ == "__main__":
    sys.exit(main())
