"""The tf.data service input (issue 14): a dispatcher and two workers as subprocesses on 127.0.0.1.

Checked: a two-epoch training run sees every training clip exactly once per epoch; bad samples
found on a worker are counted by the trainer, naming the shard; a worker killed mid-epoch ends
the trainer within --data_service_timeout_s with a message (no hang, no traceback crash) while
the dispatcher's log names the lost worker; a dispatcher restarted from its work dir is picked
up again (the pass completes, each clip once); nothing listening fails within a bounded time;
video input is refused with a message naming the flag; the served graph holds no Python op;
``stall_report`` names exactly the killed worker (learned from the dispatcher's GetWorkers and a
TCP probe), fails soft within its bound when nothing answers, and parses nothing but a
well-formed worker list.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from rnl_keras.data import BadSampleLog, DataConfig
from rnl_keras.data.delivery import DeliveryLog
from rnl_keras.data.service import (DataServiceError, check_service_source, served_eval_dataset,
                                    served_train_dataset, service_eval_dataset,
                                    service_train_dataset)
from rnl_keras.data.service_address import DataServiceAddressError, check_service_address
from rnl_keras.service_workers import ServiceWorkersError, decode_workers

from tests.datasets.service_helpers import REPO, Cluster, env, free_port, write_shards

TRAIN = os.path.join(REPO, "pipelines", "train.py")
TINY = ["--num_frames=4", "--image_size=32", "--resize_shorter=32", "--flip=false",
        "--attention=rnl", "--stage_blocks=1,1,1,1", "--base_width=8",
        "--placement=res3:0,res4:0", "--num_parallel_calls=1", "--progress=false",
        "--lr=0.01", "--weight_decay=1e-4", "--data_source=tfrecord", "--shuffle_buffer=2"]


def _cfg(glob, **kw):
    base = dict(source="tfrecord", list_file=glob, num_frames=4, image_size=28, resize_shorter=32,
                seed=1, shuffle_buffer=1, cycle_length=1, num_parallel_calls=1)
    return DataConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """16 training clips in 8 shards (labels i % 4), 8 validation clips in 4 shards."""
    root = tmp_path_factory.mktemp("service_shards")
    write_shards(str(root / "train"), 16, 8, 4, seed=0)
    write_shards(str(root / "val"), 8, 4, 4, seed=1)
    return root


@pytest.fixture
def cluster(tmp_path):
    """A dispatcher (fault tolerant, work dir in tmp_path) and two workers, all registered."""
    c = Cluster(tmp_path, work_dir=str(tmp_path / "dispatcher_state"))
    try:
        c.start_dispatcher()
        c.wait_for_log(c.dispatcher, "serving")
        c.start_worker()
        c.start_worker()
        c.wait_for_log(c.dispatcher, "2 worker(s) registered")
        yield c
    finally:
        c.close()


def _train(args, timeout):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, TRAIN, *TINY, *args], cwd=REPO, env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout, time.monotonic() - t0


def test_served_graph_holds_no_python_and_video_is_refused(shards):
    """The workers can only run TF ops: the served graphs contain no py_func, and video input
    (decoded by PyAV inside tf.py_function) is refused naming the flag."""
    for served in (served_train_dataset(_cfg(str(shards / "train" / "*.tfrecord"))),
                   served_eval_dataset(_cfg(str(shards / "val" / "*.tfrecord")))):
        graph = tf.compat.v1.GraphDef.FromString(served._as_serialized_graph().numpy())
        ops = {n.op for n in graph.node} | {n.op for f in graph.library.function
                                           for n in f.node_def}
        assert "ParallelInterleaveDatasetV4" in ops or "InterleaveDataset" in ops
        assert not ops & {"EagerPyFunc", "PyFunc", "PyFuncStateless"}, ops
    with pytest.raises(DataServiceError, match="--data_service needs --data_source=tfrecord"):
        check_service_source(DataConfig(source="video", list_file="x.txt"))
    from rnl_keras.training.config import ConfigError, TrainConfig
    for source, match in (("video", "needs --data_source=tfrecord"), ("tfrecord", None)):
        cfg = TrainConfig(train_list="x", num_classes=4, model_dir="m", data_source=source,
                          data_service="grpc://127.0.0.1:1")
        if match:
            with pytest.raises(ConfigError, match="--data_service.*" + match):
                cfg.check()
        else:
            cfg.check()
    with pytest.raises(ConfigError, match="--data_service.*expected grpc://HOST:PORT"):
        TrainConfig(train_list="x", num_classes=4, model_dir="m", data_source="tfrecord",
                    data_service="host:1").check()
    for bad in ("127.0.0.1:5050", "grpc://host", "grpc://:80", "grpc://h:99999"):
        with pytest.raises(DataServiceAddressError, match="expected grpc://HOST:PORT"):
            check_service_address(bad, 1)


def test_nothing_listening_fails_within_bound(shards, tmp_path):
    """A trainer pointed at a port with nothing listening ends promptly, exit != 0, one clear
    line naming the address (before the model is built)."""
    port = free_port()
    rc, out, took = _train([f"--train_list={shards}/train/*.tfrecord", "--num_classes=4",
                            f"--model_dir={tmp_path}/run", "--steps_per_epoch=1",
                            f"--data_service=grpc://127.0.0.1:{port}",
                            "--data_service_timeout_s=3"], timeout=120)
    assert rc != 0, out
    assert took < 60, took
    assert f"no tf.data service dispatcher answers at 127.0.0.1:{port} within 3 s" in out, out
    assert "Traceback" not in out.split("no tf.data service dispatcher")[0][-300:]


def test_two_epochs_see_every_clip_once(shards, cluster, tmp_path):
    """train.py --data_service: each of 2 epochs delivers every training clip exactly once;
    validation also runs on the service; the service processes stop cleanly on SIGTERM."""
    model_dir = tmp_path / "run"
    rc, out, _ = _train([f"--train_list={shards}/train/*.tfrecord",
                         f"--val_list={shards}/val/*.tfrecord", "--num_classes=4",
                         f"--model_dir={model_dir}", "--epochs=2", "--batch_size=2",
                         "--steps_per_epoch=8", f"--data_service={cluster.address}",
                         "--data_service_timeout_s=60", "--checkpoint_every_steps=0"],
                        timeout=300)
    assert rc == 0, out[-4000:]
    with open(model_dir / "summary.json") as f:
        summary = json.load(f)
    assert summary["global_steps"] == 16
    for record in summary["history"]:
        assert record["service_clips"] == 16, record
        assert record["service_distinct_clips"] == 16, record
        assert record["bad_samples"] == 0
        assert record["val_videos"] == 8, record
    # evaluate.py --data_service: every validation video once, scores averaged per video.
    report = tmp_path / "report.json"
    ev = subprocess.run([sys.executable, os.path.join(REPO, "pipelines", "evaluate.py"),
                         f"--model={model_dir}/final.keras", "--data_source=tfrecord",
                         f"--list_file={shards}/val/*.tfrecord", f"--report={report}",
                         f"--data_service={cluster.address}", "--data_service_timeout_s=60"],
                        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, timeout=240)
    assert ev.returncode == 0, ev.stdout[-3000:]
    with open(report) as f:
        assert json.load(f)["num_videos"] == 8
    for proc in [cluster.dispatcher, *cluster.workers]:
        assert cluster.stop(proc) == 0, cluster.log(proc)[-2000:]
        assert "SIGTERM received, stopping" in cluster.log(proc)


def test_bad_samples_travel_to_the_trainer(shards, cluster, tmp_path):
    """A record whose JPEG cannot be decoded (found only on a worker) is counted by the
    trainer's BadSampleLog, naming its shard; every good clip arrives once."""
    out = tmp_path / "bad"
    paths = write_shards(str(out), 6, 2, 4, seed=2)
    from rnl_keras.data.tfrecord import make_sequence_example
    with tf.io.TFRecordWriter(paths[0]) as w:   # shard 0: clips 0, 2, 4; clip 2 broken
        for i in (0, 2, 4):
            frames = [b"not a jpeg"] * 6 if i == 2 else None
            if frames is None:
                from rnl_keras.data.tfrecord import encode_jpeg
                import numpy as np
                frames = [encode_jpeg(np.full((32, 32, 3), i, np.uint8))] * 6
            w.write(make_sequence_example(frames, i % 4, i, 32, 32, f"clip{i}"))
    manifest = json.loads(open(paths[0] + ".json").read())
    manifest["num_bytes"] = os.path.getsize(paths[0])
    with open(paths[0] + ".json", "w") as f:
        json.dump(manifest, f)
    BadSampleLog.reset()
    ds = service_train_dataset(_cfg(str(out / "*.tfrecord")), 1, cluster.address, None, 20)
    labels = [int(y[0]) for _, y in ds]
    assert len(labels) == 5
    assert sorted(DeliveryLog.counts()) == [0, 1, 3, 4, 5]
    assert BadSampleLog.count() == 1
    assert paths[0] in BadSampleLog.messages()[0]
    assert "1 of the 3 records" in BadSampleLog.messages()[0]
    with pytest.raises(tf.errors.OpError, match="bad sample"):
        for _ in service_eval_dataset(_cfg(str(out / "*.tfrecord"), on_bad_sample="raise"), 2,
                                      cluster.address, None, 20):
            pass


def test_dispatcher_restarted_from_work_dir_is_picked_up(shards, cluster):
    """SIGKILL the dispatcher mid-pass, restart it on the same port and work dir: the workers
    and the reader reconnect and the pass completes with every clip exactly once."""
    ds = service_train_dataset(_cfg(str(shards / "train" / "*.tfrecord")), 1, cluster.address,
                               None, 20)
    it = iter(ds)
    for _ in range(3):
        next(it)
    cluster.dispatcher.send_signal(signal.SIGKILL)
    cluster.dispatcher.wait(10)
    cluster.start_dispatcher()
    n = 3 + sum(1 for _ in it)
    assert n == 16
    assert DeliveryLog.counts() == {i: 1 for i in range(16)}
    log = cluster.wait_for_log(cluster.dispatcher, "2 worker(s) registered", timeout=30)
    assert "fault tolerant, journal in" in log


def test_worker_killed_mid_epoch_stops_trainer_with_message(tmp_path):
    """Worker A holds part of the pass when it is killed (B joined later): TensorFlow's client
    then waits for A's task forever; the trainer ends within --data_service_timeout_s with exit
    1 and a message naming the dispatcher, the step and A as the lost worker (B as answering),
    and the dispatcher's log names A."""
    write_shards(str(tmp_path / "many"), 400, 80, 4, frames=4)   # ~20 s of training
    c = Cluster(tmp_path)
    try:
        c.start_dispatcher()
        c.wait_for_log(c.dispatcher, "serving")
        a = c.start_worker()
        a_log = c.wait_for_log(a, "serving")
        a_addr = a_log.split("worker ")[1].split(" of dispatcher")[0]
        c.wait_for_log(c.dispatcher, "1 worker(s) registered")
        train = subprocess.Popen(
            [sys.executable, TRAIN, *TINY, f"--train_list={tmp_path}/many/*.tfrecord",
             "--num_classes=4", f"--model_dir={tmp_path}/run", "--epochs=1", "--batch_size=2",
             "--steps_per_epoch=200", f"--data_service={c.address}", "--log_every_steps=1",
             "--data_service_timeout_s=10", "--checkpoint_every_steps=0"],
            cwd=REPO, env=env(), stdout=open(tmp_path / "train.log", "w"),
            stderr=subprocess.STDOUT)
        try:
            c.wait_for_log(a, "1 task(s) running", timeout=120)
            b_addr = _worker_address(c, c.start_worker())
            c.wait_for_log(c.dispatcher, "2 worker(s) registered")
            a.kill()
            t_kill = time.monotonic()
            rc = train.wait(timeout=150)
            took = time.monotonic() - t_kill
        finally:
            if train.poll() is None:
                train.kill()
                train.wait(10)
        out = (tmp_path / "train.log").read_text()
        assert rc == 1, out[-3000:]
        assert took < 120, took
        assert f"no batch from the tf.data service {c.address}" in out, out[-3000:]
        assert "epoch 1 step" in out
        last = [ln for ln in out.splitlines() if "FAILED" in ln][-1]
        assert f"worker {a_addr} does not answer" in last, last
        assert f"worker {b_addr} does not answer" not in last, last
        assert f"Still answering: {b_addr}." in last, last
        assert f"Lost worker {a_addr}" in c.wait_for_log(c.dispatcher, "Lost worker", timeout=30)
    finally:
        c.close()


def _worker_address(cluster, proc) -> str:
    log = cluster.wait_for_log(proc, "serving")
    return log.split("worker ")[1].split(" of dispatcher")[0]


def test_stall_report_names_the_killed_worker(shards, cluster):
    """Kill worker A while a pass is being read: stall_report names A as lost (and only A), B as
    still answering; the dispatcher's own log marks A lost by address."""
    from rnl_keras.data.service import stall_report
    a, b = cluster.workers
    a_addr, b_addr = _worker_address(cluster, a), _worker_address(cluster, b)
    it = iter(service_train_dataset(_cfg(str(shards / "train" / "*.tfrecord")), 1,
                                    cluster.address, None, 20))
    for _ in range(2):
        next(it)
    live = stall_report(cluster.address, "epoch 1 step 2")
    assert "All 2 registered worker(s) answer" in live, live
    a.kill()
    a.wait(10)
    t0 = time.monotonic()
    msg = stall_report(cluster.address, "epoch 1 step 3")
    assert time.monotonic() - t0 < 10
    assert msg.startswith(f"while epoch 1 step 3: no batch from the tf.data service "
                          f"{cluster.address}"), msg
    assert f"worker {a_addr} does not answer" in msg, msg
    assert f"worker {b_addr} does not answer" not in msg, msg
    assert f"Still answering: {b_addr}." in msg, msg
    cluster.wait_for_log(cluster.dispatcher, f"{a_addr} (does not answer: lost)", timeout=30)


def test_stall_report_fails_soft_when_nothing_answers():
    """No dispatcher: the message says the workers could not be learned, names the address and
    points at the dispatcher's log, within its bound (no exception)."""
    from rnl_keras.data.service import stall_report
    port = free_port()
    t0 = time.monotonic()
    msg = stall_report(f"grpc://127.0.0.1:{port}", "epoch 2 step 7")
    assert time.monotonic() - t0 < 10
    assert "could not be learned from the dispatcher" in msg, msg
    assert f"127.0.0.1:{port}" in msg and "'Lost worker HOST:PORT'" in msg, msg


def _ld(field: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (tag, varint length < 128, payload)."""
    assert len(payload) < 128
    return bytes([field << 3 | 2, len(payload)]) + payload


def test_worker_list_parsing_accepts_only_host_port():
    """GetWorkersResponse bytes written by hand (field 1: WorkerInfo {1: address, 2: id}) decode
    to the addresses; garbage, a non-HOST:PORT address or an out-of-range port is refused."""
    info = lambda addr, wid: _ld(1, _ld(1, addr) + bytes([2 << 3, wid]))  # noqa: E731
    raw = info(b"127.0.0.1:5051", 7) + info(b"worker-b.example:6000", 8) + info(b"[::1]:7000", 9)
    assert decode_workers(raw) == ["127.0.0.1:5051", "worker-b.example:6000", "[::1]:7000"]
    assert decode_workers(b"") == []
    for bad in (info(b"rm -rf /:1", 1), info(b"host:99999", 1), info(b"host", 1),
                b"\x0a\x7f\x01", _ld(1, b"\x0a\x02\xff\xfe")):
        with pytest.raises(ServiceWorkersError):
            decode_workers(bad)


def test_workers_report_cases():
    """The worker part of the stall message for each survey outcome: several lost (plural, each
    named, none answering), none registered, every one answering."""
    from rnl_keras.data.service import workers_report
    both = workers_report({"workers": ["h1:1", "h2:2"],
                           "lost": {"h1:1": "ConnectionRefusedError: refused",
                                    "h2:2": "TimeoutError: timed out"}}, "grpc://d:5")
    assert both.startswith("Lost: worker h1:1 does not answer (ConnectionRefusedError: refused); "
                           "worker h2:2 does not answer (TimeoutError: timed out); the clips they "
                           "held"), both
    assert "No registered worker answers." in both and "lost workers (same" in both
    assert "No worker is registered" in workers_report({"workers": [], "lost": {}}, "grpc://d:5")
    live = workers_report({"workers": ["h1:1"], "lost": {}}, "grpc://d:5")
    assert live.startswith("All 1 registered worker(s) answer (h1:1): none was lost"), live


def test_evaluate_without_workers_stops_naming_why(shards, tmp_path):
    """evaluate.py --data_service against a dispatcher with no worker: no batch ever comes; it
    ends (exit 1) soon after --data_service_timeout_s, its last line saying no worker is
    registered (the message is built by stall_report only when the limit passes)."""
    import keras

    from rnl_keras.models import tsm_resnet50
    keras.utils.set_random_seed(0)
    tsm_resnet50(4, num_frames=4, attention="none", image_size=28, stage_blocks=(1, 1, 1, 1),
                 base_width=8).save(tmp_path / "m.keras")
    c = Cluster(tmp_path)
    try:
        c.start_dispatcher()
        c.wait_for_log(c.dispatcher, "0 worker(s) registered")
        t0 = time.monotonic()
        ev = subprocess.run([sys.executable, os.path.join(REPO, "pipelines", "evaluate.py"),
                             f"--model={tmp_path / 'm.keras'}", "--data_source=tfrecord",
                             f"--list_file={shards}/val/*.tfrecord", "--resize_shorter=32",
                             f"--report={tmp_path / 'r.json'}", f"--data_service={c.address}",
                             "--data_service_timeout_s=3"], cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=120)
        took = time.monotonic() - t0
    finally:
        c.close()
    last = ev.stdout.strip().splitlines()[-1]
    assert ev.returncode == 1, ev.stdout[-3000:]
    assert took < 90, took
    assert last.startswith("evaluate.py: FAILED: no progress for 3 s while reading batch 1: no "
                           f"batch from the tf.data service {c.address}"), last
    assert "No worker is registered with the dispatcher" in last, last
    assert not (tmp_path / "r.json").exists()
