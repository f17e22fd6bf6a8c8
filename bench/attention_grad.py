"""Attention training step: forward + backward with and without the recomputing backward.

    python bench/attention_grad.py [--n=6272] [--batch=1] [--d=256] [--dv=256] [--block=1024]
                                   [--similarity=gaussian] [--rows] [--iters=2]
                                   [--json=attention_grad.json]

One tf.function computing the gradients of sum(y * r) w.r.t. P and V (symmetric path, y =
attend(P, P, V, symmetric=True); ``--rows``: the row-chunked path with K = P) at res3's default
shapes (N = T H W = 8 x 28 x 28 = 6272, d = dv = 256, query_chunk_size 1024: 7 blocks of 896),
``recompute_grad`` False (TF autodiff keeps every exp block) and True (attention.recompute
recomputes them).

Peak memory, method: every configuration runs in a fresh process with
TF_CPU_ALLOCATOR_USE_BFC=true (the default CPU allocator keeps no statistics). After the timed
calls, one more call between tf.config.experimental.reset_memory_stats("CPU:0") and
get_memory_info("CPU:0")["peak"] (common.allocator_peak_mb): "peak MB" is the most the allocator
held during that call, the inputs (a few MB) included; "above inputs" subtracts what it held just
before it. Times: minimum wall time over the timed calls, after one warm-up call (tracing);
the machine may be shared.
"""
import argparse
import json
import os
import sys

from common import allocator_peak_mb, print_table_start, run_subprocess, time_fn, write_json

BFC = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}   # allocator statistics (set before TF starts)


def worker(cfg):
    import tensorflow as tf

    from rnl_keras.layers import attention

    tf.random.set_seed(0)
    b, n = cfg["batch"], cfg["n"]
    p = tf.random.normal((b, n, cfg["d"]), stddev=cfg["d"] ** -0.5)
    v = tf.random.normal((b, n, cfg["dv"]))
    r = tf.random.normal((b, n, cfg["dv"]))

    @tf.function
    def step(p, v, r):
        with tf.GradientTape() as tape:
            tape.watch([p, v])
            y = attention.attend(p, p, v, cfg["similarity"], cfg["block"],
                                 symmetric=not cfg["rows"], recompute_grad=cfg["recompute"])
            loss = tf.reduce_sum(y * r)
        return tape.gradient(loss, [p, v])

    out = time_fn(step, p, v, r, warmup=1, iters=cfg["iters"])   # warm-up: tracing
    out["above_inputs_mb"] = allocator_peak_mb(step, p, v, r)     # resets the stats first
    out["peak_mb"] = tf.config.experimental.get_memory_info("CPU:0")["peak"] / 1e6
    print(json.dumps(out))


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=6272)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--dv", type=int, default=256)
    parser.add_argument("--block", type=int, default=1024, help="query_chunk_size")
    parser.add_argument("--similarity", default="gaussian", choices=("gaussian", "cosine"))
    parser.add_argument("--rows", action="store_true", help="row-chunked path, not symmetric")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--json", default="attention_grad.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    header = (f"{'path':<9} {'sim':<8} {'B':>2} {'N':>6} {'block':>5} {'recompute':>9} | "
              f"{'f+b min s':>9} {'cpu s':>7} | {'peak MB':>8} {'above inputs MB':>15}")
    info = print_table_start(__doc__, header)
    rows = []
    script = os.path.abspath(__file__)
    for recompute in (False, True):
        cfg = {"n": args.n, "batch": args.batch, "d": args.d, "dv": args.dv, "block": args.block,
               "similarity": args.similarity, "rows": args.rows, "recompute": recompute,
               "iters": args.iters}
        res = run_subprocess(script, ["--worker", json.dumps(cfg)], env=BFC)
        rows.append({**cfg, **res})
        if "error" in res:
            print(f"{cfg}: ERROR {res['error'][-300:]}", flush=True)
            continue
        path = "rows" if args.rows else "symmetric"
        print(f"{path:<9} {args.similarity:<8} {args.batch:>2} {args.n:>6} {args.block:>5} "
              f"{str(recompute):>9} | {res['min_s']:9.3f} {res['cpu_s']:7.2f} | "
              f"{res['peak_mb']:8.1f} {res['above_inputs_mb']:15.1f}", flush=True)
    path = write_json(args.json, {"machine": info, "memory_method": "BFC allocator peak during "
                                  "the timed calls (reset_memory_stats after a warm-up), fresh "
                                  "process per configuration", "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
