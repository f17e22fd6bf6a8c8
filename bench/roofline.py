"""Roofline of the RNL block: achieved multiply-add rate vs this machine's matmul rate.

    python bench/roofline.py [--quick] [--iters=3] [--json=bench/results/roofline.json]

Measures in one run: a 4096^2 float32 (and bfloat16) tf.matmul, a bare softmax attention
(N = 6272, d = 256, plain TF), and the RNL block (Gaussian, F_theta 3x7x7 conv at res3 / 3x3x3 at
res4) at res3 (B, 8, 28, 28, 512) and res4 (B, 8, 14, 14, 1024), B = 1: forward and
forward+backward, float32 and mixed_bfloat16, with
  materialised  the whole N x N weight matrix at once (attention.dispatch.DEFAULT_BLOCK = None, the
                pre-optimisation behaviour), and
  chunk=1024    query_chunk_size=1024: the symmetric blocked path (balanced 896-blocks at res3);
                in forward+backward the recomputing backward (attention.recompute: bounded
                memory, one more P P^T of arithmetic than autodiff, not counted in the rate).
                The block input is N(0, 1), the weights fresh (BN gamma 1), and
  trained-like  the same with theta scaled as in ``trained_like.py`` (|p|^2 / 2 spanning
                ``TRAINED_SPREAD`` within a clip, as in the models trained here): the attention
                runs the same path, so the two should agree.
(query_chunk_size=None now takes the symmetric blocked path too, with DEFAULT_BLOCK = 1024.)
Achieved rate = true multiply-adds (rnl_keras.profiling: attention products counted in full,
2 N^2 C') x 2 / time, in GFLOP/s; forward+backward counts 3x the forward multiply-adds. A rate
above the matmul rate means less arithmetic was executed than counted (the symmetric path skips
half of P P^T). Wall times are minima over the timed iterations; the machine may be shared.
"""
import argparse
import sys

from common import KERNELS, SHAPES, machine, matmul_rate, set_policy, time_fn, write_json


def rnl_fn(shape_name, batch, chunk, dtype, backward, trained_like=False):
    import keras
    import tensorflow as tf

    from rnl_keras.layers import RegionNonLocal
    from rnl_keras.profiling import layer_macs

    set_policy(dtype)
    shape = (batch,) + SHAPES[shape_name]
    layer = RegionNonLocal(kernel_size=KERNELS[shape_name], query_chunk_size=chunk)
    layer.build(shape)
    layer.bn.gamma.assign(tf.ones_like(layer.bn.gamma))
    x = tf.random.normal(shape)
    if trained_like:
        from trained_like import trained_like_layer

        trained_like_layer(layer, x)
    macs = batch * layer_macs(layer, shape, shape)["true"]
    if backward:
        weights = layer.trainable_weights

        @tf.function
        def fn(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32))
            return tape.gradient(loss, [x] + weights)
        macs *= 3
    else:
        fn = tf.function(lambda x: layer(x, training=False))
    keras.mixed_precision.set_global_policy("float32")
    return fn, x, macs


def bare_attention(iters):
    import tensorflow as tf

    n, d = 6272, 256
    q = tf.random.normal((1, n, d)) * 0.1
    v = tf.random.normal((1, n, d))
    fn = tf.function(lambda q, v: tf.matmul(tf.nn.softmax(tf.matmul(q, q, transpose_b=True)), v))
    t = time_fn(fn, q, v, iters=iters)
    flops = 2 * 2 * n * n * d
    return {"name": "bare softmax attention N=6272 d=256 (plain TF)", "gflops": flops / t["min_s"] / 1e9,
            **t}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="res3 only, fp32 + bf16 forward")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--json", default="roofline.json")
    args = parser.parse_args(argv)
    from rnl_keras.layers.attention import dispatch

    iters = 2 if args.quick else args.iters
    info = machine()
    mm = {"float32": matmul_rate(iters=iters)}
    mm["bfloat16"] = matmul_rate(dtype="bfloat16", iters=iters)
    print(f"machine: {info}")
    for k, v in mm.items():
        print(f"matmul 4096^2 {k}: {v['gflops']:.1f} GFLOP/s (min time {v['min_s']:.3f}s, "
              f"median {v['gflops_median']:.1f} GFLOP/s)")
    bare = bare_attention(iters)
    print(f"{bare['name']}: {bare['gflops']:.1f} GFLOP/s = "
          f"{bare['gflops'] / mm['float32']['gflops']:.2f} of matmul")
    rows = []
    shapes = ["res3"] if args.quick else ["res3", "res4"]
    modes = [False] if args.quick else [False, True]
    header = (f"{'shape':<5} {'dir':<8} {'dtype':<8} {'attention':<13} {'time s':>8} {'med s':>8} "
              f"{'GMACs':>7} {'GFLOP/s':>8} {'/matmul':>8}")
    print(header)
    print("-" * len(header))
    for shape_name in shapes:
        for backward in modes:
            for dtype in ("float32", "bfloat16"):
                variants = ("materialised", "chunk=1024")
                if dtype == "float32":
                    variants += ("trained-like",)
                for variant in variants:
                    chunk = None if variant == "materialised" else 1024
                    dispatch.DEFAULT_BLOCK = None if variant == "materialised" else 1024
                    fn, x, macs = rnl_fn(shape_name, 1, chunk, dtype, backward,
                                         variant == "trained-like")
                    t = time_fn(fn, x, iters=iters)
                    dispatch.DEFAULT_BLOCK = 1024
                    rate = 2 * macs / t["min_s"] / 1e9
                    ratio = rate / mm[dtype]["gflops"]
                    ratio_fp32 = rate / mm["float32"]["gflops"]
                    row = {"shape": shape_name, "backward": backward, "dtype": dtype,
                           "variant": variant, "true_macs": macs, "gflops": rate,
                           "ratio_to_matmul_same_dtype": ratio,
                           "ratio_to_matmul_fp32": ratio_fp32, **t}
                    rows.append(row)
                    print(f"{shape_name:<5} {'fwd+bwd' if backward else 'fwd':<8} {dtype:<8} "
                          f"{variant:<13} {t['min_s']:8.3f} {t['median_s']:8.3f} {macs / 1e9:7.2f} "
                          f"{rate:8.1f} {ratio:8.2f}", flush=True)
    path = write_json(args.json, {"machine": info, "matmul": mm, "bare_attention": bare,
                                  "rnl_block": rows, "units": "GFLOP/s = 2 x multiply-adds / s"})
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
