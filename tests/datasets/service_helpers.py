"""Helpers of the tf.data service tests: small TFRecord shards, and a dispatcher with workers
as subprocesses on 127.0.0.1 (every wait bounded, every process ended by the fixture)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVICE = os.path.join(REPO, "pipelines", "data_service.py")


def write_shards(out_dir: str, num_clips: int, num_shards: int, num_classes: int,
                 frames: int = 6, size: int = 32, seed: int = 0) -> list[str]:
    """``num_clips`` clips of random JPEG frames; clip i: label ``i % num_classes``, list index i,
    in shard ``i % num_shards``; each shard with the manifest ``prepare_data.py`` writes."""
    from rnl_keras.data.tfrecord import encode_jpeg, make_sequence_example, shard_name
    import tensorflow as tf
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for s in range(num_shards):
        path = shard_name(out_dir, "data", s, num_shards)
        idx = list(range(s, num_clips, num_shards))
        with tf.io.TFRecordWriter(path) as w:
            for i in idx:
                jpegs = [encode_jpeg(rng.integers(0, 255, (size, size, 3), np.uint8))
                         for _ in range(frames)]
                w.write(make_sequence_example(jpegs, i % num_classes, i, size, size, f"clip{i}"))
        manifest = {"complete": True, "num_examples": len(idx), "num_bytes": os.path.getsize(path),
                    "labels": [i % num_classes for i in idx], "indices": idx, "skipped": [],
                    "notes": []}
        with open(path + ".json", "w") as f:
            json.dump(manifest, f)
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
    e["PYTHONUNBUFFERED"] = "1"
    e["TF_CPP_MIN_LOG_LEVEL"] = "0"   # the dispatcher's "Lost worker" line is an INFO log
    e.pop("TF_CONFIG", None)
    return e


class Cluster:
    """A dispatcher (``port``, optional ``work_dir``) and workers, logs in ``log_dir``."""

    def __init__(self, log_dir: str, work_dir: str | None = None, worker_timeout_s: float = 2.0):
        self.log_dir, self.work_dir = str(log_dir), work_dir
        self.port = free_port()
        self.address = f"grpc://127.0.0.1:{self.port}"
        self.worker_timeout_s = worker_timeout_s
        self.dispatcher = None
        self.workers: list[subprocess.Popen] = []
        self._n = 0

    def _start(self, args, name):
        self._n += 1
        log = open(os.path.join(self.log_dir, f"{name}-{self._n}.log"), "w")
        proc = subprocess.Popen([sys.executable, SERVICE, *args, "--status_every_s=0.5"],
                                cwd=REPO, env=env(), stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log.name
        return proc

    def start_dispatcher(self):
        args = ["dispatcher", f"--port={self.port}", f"--worker_timeout_s={self.worker_timeout_s}"]
        if self.work_dir:
            args.append(f"--work_dir={self.work_dir}")
        self.dispatcher = self._start(args, "dispatcher")
        return self.dispatcher

    def start_worker(self):
        proc = self._start(["worker", f"--dispatcher=127.0.0.1:{self.port}", "--port=0",
                            "--worker_host=127.0.0.1"], "worker")
        self.workers.append(proc)
        return proc

    def wait_for_log(self, proc, text: str, timeout: float = 60.0) -> str:
        """Wait (bounded) until ``text`` appears in ``proc``'s log; returns the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(proc.log_path) as f:
                log = f.read()
            if text in log:
                return log
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args} exited {proc.returncode}:\n{log[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} in {proc.log_path} after {timeout} s:\n{log[-3000:]}")

    def log(self, proc) -> str:
        with open(proc.log_path) as f:
            return f.read()

    def stop(self, proc, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL if it has not ended within ``timeout``; returns its status."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def close(self) -> None:
        for proc in self.workers + ([self.dispatcher] if self.dispatcher else []):
            self.stop(proc)
