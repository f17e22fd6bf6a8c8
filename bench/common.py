"""Shared helpers of the benchmarks: timing, the matmul reference rate, memory, JSON output.

Timing: ``time_fn`` runs warm-up calls (tracing excluded), then ``iters`` timed calls and reports
the minimum and median wall time and the process CPU time. On a shared machine (other jobs on the
same cores) wall times are inflated by whatever else runs; the minimum over repeats is the least
disturbed figure, and CPU-seconds (summed over threads) are far less sensitive to contention.
Rates: 1 multiply-add (MAC) = 2 FLOPs; every "GFLOP/s" here is 2 x MACs / s.
"""
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
RESULTS = os.path.join(ROOT, "bench", "results")

import rnl_keras  # noqa: E402,F401  (before TensorFlow: the package's oneDNN default applies)

# Table I shapes of the RNL blocks (channels-last clips, T = 8).
SHAPES = {"res3": (8, 28, 28, 512), "res4": (8, 14, 14, 1024)}
KERNELS = {"res3": (3, 7, 7), "res4": (3, 3, 3)}


def _block(x):
    if hasattr(x, "numpy"):
        x.numpy()
    elif isinstance(x, (list, tuple)):
        for item in x:
            _block(item)
    return x


def time_fn(fn, *args, warmup=1, iters=3):
    """Wall / CPU seconds of ``fn(*args)`` (outputs forced to host). Returns a dict."""
    for _ in range(warmup):
        _block(fn(*args))
    walls, cpus = [], []
    for _ in range(iters):
        c0, t0 = time.process_time(), time.perf_counter()
        _block(fn(*args))
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"min_s": min(walls), "median_s": statistics.median(walls), "cpu_s": min(cpus),
            "iters": iters}


def matmul_rate(n=4096, dtype="float32", iters=3):
    """Float matmul rate of this machine (GFLOP/s, 2 n^3 flops) with TF, and its timing."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)
    if dtype != "float32":
        a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    fn = tf.function(lambda a, b: tf.matmul(a, b))
    t = time_fn(fn, a, b, warmup=1, iters=iters)
    flops = 2 * n ** 3
    return {"n": n, "dtype": dtype, "gflops": flops / t["min_s"] / 1e9,
            "gflops_median": flops / t["median_s"] / 1e9,
            "gflops_per_cpu_s": flops / t["cpu_s"] / 1e9, **t}


def machine():
    info = {"python": platform.python_version(), "cpus": os.cpu_count(),
            "load_avg_1_5_15": os.getloadavg(),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}
    try:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        info["model"] = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                              if line.startswith("model name")), "?")
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
        info["simd"] = sorted({f for f in flags.split() if f.startswith(("avx", "fma", "amx"))})
    except OSError:
        pass
    return info


def print_table_start(doc, header):
    """Print the machine, the "Peak memory, method:" paragraph of a bench's docstring ``doc`` and
    the table ``header`` with its rule; returns the machine info."""
    info = machine()
    print(info)
    print(doc.split("Peak memory, method:")[1].split("Times:")[0].strip().replace("\n", " "))
    print(header)
    print("-" * len(header))
    return info


def maxrss_mb():
    """Peak resident set size of this process so far, MB (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def allocator_peak_mb(fn, *args):
    """Peak MB that TF's allocator held during one ``fn(*args)``, over what it held before.

    Needs TF_CPU_ALLOCATOR_USE_BFC=true in the environment before TensorFlow starts (the default
    CPU allocator keeps no statistics).
    """
    import tensorflow as tf

    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    _block(fn(*args))
    return (tf.config.experimental.get_memory_info("CPU:0")["peak"] - before) / 1e6


def run_subprocess(script, args, timeout=1800, env=None):
    """Run ``python script args`` in a fresh process; its last stdout line starting "{" is JSON."""
    cmd = [sys.executable, script] + list(args)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(lines[-1])


def write_json(name, payload):
    os.makedirs(RESULTS, exist_ok=True)
    path = name if os.path.isabs(name) or os.sep in name else os.path.join(RESULTS, name)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    return path


def set_policy(dtype):
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
