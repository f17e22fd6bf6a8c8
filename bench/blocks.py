"""Block benchmark (issue 2): time and peak memory of RNL / NL / SE at Table I's res3 / res4 shapes.

    python bench/blocks.py [--quick] [--iters=2] [--json=bench/results/blocks.json]

Blocks: RNL (Gaussian) with F_theta = conv / avg / max, NL with and without 1x2x2 sub-sampling,
SE (original, r = 16); shapes res3 (B, 8, 28, 28, 512) and res4 (B, 8, 14, 14, 1024), B = 1 and 4;
query_chunk_size None and 1024. "rnl-conv materialised" is the RNL without the blocked symmetric
path (attention.dispatch.DEFAULT_BLOCK = None: the whole N x N matrix at once, the old behaviour),
the reference of the chunked memory bound; with query_chunk_size=None the RNL blocks by 1024 too.
Block inputs are N(0, 1). "rnl-conv" has the fresh weights (|p|^2 / 2 spans ~1e-2 within a clip);
"rnl-conv trained-like" the weights of ``trained_like.py`` (theta scaled so that it spans
``TRAINED_SPREAD``, as in the models trained here; BN gamma 1): the speed a trained block gets.

Peak memory, method: every configuration runs in two fresh Python processes. The first times it
(default allocator) and reports the process's peak RSS growth (ru_maxrss over the post-build
baseline: includes TF's runtime and malloc's caching). The second runs the same calls with
TensorFlow's BFC allocator on the CPU (TF_CPU_ALLOCATOR_USE_BFC=true) and reports the allocator's
peak bytes in use during one call, minus the bytes in use before it (the input, the weights):
"fwd MB" / "f+b MB", the memory the block itself needs, independent of the rest of the process.
Times: minimum wall time over the timed iterations; the
machine may be shared with other jobs.
"""
import argparse
import json
import os
import sys

from common import (KERNELS, SHAPES, allocator_peak_mb, maxrss_mb, print_table_start,
                    run_subprocess, time_fn, write_json)

BLOCKS = ("rnl-conv", "rnl-conv trained-like", "rnl-avg", "rnl-max", "rnl-conv materialised", "nl",
          "nl-sub", "se")


def worker(cfg):
    import tensorflow as tf

    from rnl_keras.layers import NonLocal, RegionNonLocal, SqueezeExcite
    from rnl_keras.layers.attention import dispatch
    from rnl_keras.profiling import layer_macs

    shape = (cfg["batch"],) + SHAPES[cfg["shape"]]
    kind, chunk = cfg["block"], cfg["chunk"]
    if kind.startswith("rnl"):
        if kind.endswith("materialised"):
            dispatch.DEFAULT_BLOCK = None
        agg = kind.split()[0].split("-")[1]
        layer = RegionNonLocal(aggregation=agg, kernel_size=KERNELS[cfg["shape"]],
                               query_chunk_size=chunk)
    elif kind.startswith("nl"):
        layer = NonLocal(subsample=kind == "nl-sub", query_chunk_size=chunk)
    else:
        layer = SqueezeExcite(reduction=16, mode="scale")
    layer.build(shape)
    x = tf.random.normal(shape)
    if kind.endswith("trained-like"):
        from trained_like import trained_like_layer

        trained_like_layer(layer, x)
    macs = shape[0] * layer_macs(layer, shape, shape)["true"]
    fwd = tf.function(lambda x: layer(x, training=False))

    @tf.function
    def fwd_bwd(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y)
        return tape.gradient(loss, [x] + layer.trainable_weights)

    if cfg.get("allocator_peak"):
        out = {}
        for name, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
            fn(x)  # trace + warm-up
            out[name] = {"tf_peak_mb": allocator_peak_mb(fn, x)}
        print(json.dumps(out))
        return
    base = maxrss_mb()
    out = {"true_gmacs": macs / 1e9, "baseline_rss_mb": base}
    out["fwd"] = time_fn(fwd, x, warmup=1, iters=cfg["iters"])
    out["fwd"]["rss_peak_mb"] = maxrss_mb() - base
    out["fwd_bwd"] = time_fn(fwd_bwd, x, warmup=1, iters=cfg["iters"])
    out["fwd_bwd"]["rss_peak_mb"] = maxrss_mb() - base
    print(json.dumps(out))


def configs(quick):
    for shape in ("res3", "res4"):
        for batch in (1, 4):
            for block in BLOCKS:
                if quick and batch == 4 and block in ("rnl-avg", "rnl-max"):
                    continue
                chunks = [None] if block in ("se", "rnl-conv materialised") else [None, 1024]
                for chunk in chunks:
                    yield {"shape": shape, "batch": batch, "block": block, "chunk": chunk}


def chunk_summary(rows):
    """query_chunk_size=1024 against the materialised block, per shape and batch (issue 6 target)."""
    found = {(r["shape"], r["batch"], r["block"], r["chunk"]): r for r in rows if "error" not in r}
    lines = []
    for (shape, batch, block, chunk), ref in found.items():
        if block != "rnl-conv materialised":
            continue
        for name, mode in [(n, m) for n in ("rnl-conv", "rnl-conv trained-like")
                           for m in (1024, None)]:
            row = found.get((shape, batch, name, mode))
            if row is None:
                continue
            lines.append(
                f"{shape} B={batch} {name} chunk={mode} vs materialised: fwd time "
                f"{row['fwd']['min_s'] / ref['fwd']['min_s']:.2f}x, fwd peak "
                f"{row['fwd']['tf_peak_mb'] / ref['fwd']['tf_peak_mb']:.1%}, f+b time "
                f"{row['fwd_bwd']['min_s'] / ref['fwd_bwd']['min_s']:.2f}x, f+b peak "
                f"{row['fwd_bwd']['tf_peak_mb'] / ref['fwd_bwd']['tf_peak_mb']:.1%}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 timed iteration, fewer configs")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--json", default="blocks.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--only", default=None, help="comma-separated shape:batch filter, e.g. res3:4")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    iters = 1 if args.quick else args.iters
    header = (f"{'shape':<5} {'B':>2} {'block':<22} {'chunk':>6} {'GMACs':>7} | {'fwd s':>7} "
              f"{'fwd MB':>8} {'RSS MB':>7} | {'f+b s':>7} {'f+b MB':>8} {'RSS MB':>7}")
    info = print_table_start(__doc__, header)
    rows = []
    script = os.path.abspath(__file__)
    for cfg in configs(args.quick):
        if args.only and f"{cfg['shape']}:{cfg['batch']}" not in args.only.split(","):
            continue
        cfg["iters"] = iters
        res = run_subprocess(script, ["--worker", json.dumps(cfg)])
        if "error" not in res:
            mem = run_subprocess(script, ["--worker", json.dumps({**cfg, "allocator_peak": True})],
                                 env={"TF_CPU_ALLOCATOR_USE_BFC": "true"})
            if "error" in mem:
                res = mem
            else:
                for part in ("fwd", "fwd_bwd"):
                    res[part].update(mem[part])
        rows.append({**cfg, **res})
        if "error" in res:
            print(f"{cfg}: ERROR {res['error'][-300:]}", flush=True)
            continue
        print(f"{cfg['shape']:<5} {cfg['batch']:>2} {cfg['block']:<22} {str(cfg['chunk']):>6} "
              f"{res['true_gmacs']:7.2f} | {res['fwd']['min_s']:7.3f} {res['fwd']['tf_peak_mb']:8.0f} "
              f"{res['fwd']['rss_peak_mb']:7.0f} | {res['fwd_bwd']['min_s']:7.3f} "
              f"{res['fwd_bwd']['tf_peak_mb']:8.0f} {res['fwd_bwd']['rss_peak_mb']:7.0f}", flush=True)
    summary = chunk_summary(rows)
    for line in summary:
        print(line)
    path = write_json(args.json, {"machine": info, "memory_method": "tf_peak_mb: BFC allocator peak "
                                  "during one call minus bytes in use before it; rss_peak_mb: "
                                  "ru_maxrss growth over the post-build baseline", "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
