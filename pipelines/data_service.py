"""Run a tf.data service dispatcher or worker for ``train.py`` / ``evaluate.py --data_service``.

    python pipelines/data_service.py dispatcher --port=5050 --work_dir=/shared/dispatcher_state
    python pipelines/data_service.py worker --dispatcher=dispatcher-host:5050 --port=5051 \
        --worker_host=$(hostname)
    python pipelines/train.py ... --data_source=tfrecord --data_service=grpc://dispatcher-host:5050

Workers decode TFRecord shards (``pipelines/prepare_data.py``), sample and augment; the trainer
only batches and feeds. They run TensorFlow ops only (see :mod:`rnl_keras.data.service`), so
this program imports nothing but TensorFlow (and, on the dispatcher, the small
:mod:`rnl_keras.service_workers`, which needs only the standard library, grpcio and protobuf,
both TensorFlow's own dependencies) and starts fast. The shard paths of the trainer's
``--train_list`` must be readable under the same names on every worker machine (a shared file
system or a ``gs://`` bucket). Each process logs what it serves (dispatcher: its registered
workers by address whenever the list or their state changes, e.g. ``2 worker(s) registered:
10.0.0.2:5051, 10.0.0.3:5051 (does not answer: lost)``, learned from its own ``GetWorkers`` RPC
and a bounded TCP probe of each, plus TensorFlow's ``Lost worker HOST:PORT due to timeout``;
worker: its address and the number of tasks it runs) and stops cleanly on SIGTERM / Ctrl-C
(exit 0). A trainer that gets no batch for ``--data_service_timeout_s`` asks the dispatcher the
same way and names the lost worker in its exit message
(:func:`rnl_keras.data.service.stall_report`). With ``--work_dir`` the dispatcher is fault
tolerant: it journals its state there, and restarted with the same port and work dir it takes up
the registered workers, the jobs and the trainers again.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("port", None, "Port to listen on (dispatcher: the one trainers and workers "
                     "use; worker: 0 picks a free one).")
flags.DEFINE_string("work_dir", None, "Dispatcher: directory of its journal (fault-tolerant "
                    "mode: a restarted dispatcher recovers its state from it).")
flags.DEFINE_float("worker_timeout_s", 10.0, "Dispatcher: drop a worker silent this long.")
flags.DEFINE_float("job_gc_timeout_s", 300.0, "Dispatcher: remove a job unread this long.")
flags.DEFINE_string("dispatcher", None, "Worker: the dispatcher's HOST:PORT (or grpc://HOST:PORT).")
flags.DEFINE_string("worker_host", "localhost", "Worker: the name the dispatcher and trainers "
                    "reach this worker by (this machine's host name when they run elsewhere).")
flags.DEFINE_float("status_every_s", 2.0, "How often the status is checked (logged when it "
                   "changes).")

USAGE = ("usage: data_service.py dispatcher --port=P [--work_dir=DIR] | "
         "data_service.py worker --dispatcher=HOST:P [--port=Q] [--worker_host=NAME]")


def _host_port(address: str) -> str:
    """``[grpc://]HOST:PORT`` -> ``HOST:PORT``; UsageError naming --dispatcher otherwise."""
    rest = address[len("grpc://"):] if address.startswith("grpc://") else address
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise app.UsageError(f"--dispatcher={address!r}: expected HOST:PORT ({USAGE})")
    return rest


def make_dispatcher(port: int, work_dir: str | None, worker_timeout_s: float,
                    job_gc_timeout_s: float):
    """A started DispatchServer on ``port`` (fault tolerant with ``work_dir``). The dispatcher
    checks for silent workers and unread jobs every half of the smaller of the two timeouts."""
    import tensorflow as tf
    if work_dir:
        os.makedirs(work_dir, exist_ok=True)
    check_ms = int(max(0.5, min(worker_timeout_s, job_gc_timeout_s) / 2) * 1000)
    config = tf.data.experimental.service.DispatcherConfig(
        port=int(port), work_dir=work_dir or None, fault_tolerant_mode=bool(work_dir),
        worker_timeout_ms=int(worker_timeout_s * 1000),
        job_gc_timeout_ms=int(job_gc_timeout_s * 1000), job_gc_check_interval_ms=check_ms)
    return tf.data.experimental.service.DispatchServer(config)


def make_worker(dispatcher: str, port: int, host: str):
    """A started WorkerServer on ``port`` (0: any), registered with ``dispatcher`` (HOST:PORT)
    and reached by the others as ``host:port``."""
    import tensorflow as tf
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher, worker_address=f"{host}:%port%", port=int(port),
        heartbeat_interval_ms=1000)
    return tf.data.experimental.service.WorkerServer(config)


def serve_until_signal(server, describe: str, status, every_s: float) -> int:
    """Log ``status()`` whenever it changes until SIGTERM / SIGINT; then stop the server.

    Returns the signal number that stopped it.
    """
    stop, received = threading.Event(), []

    def on_signal(signum, frame):
        received.append(signum)
        stop.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    logging.info("%s: serving (SIGTERM or Ctrl-C stops it)", describe)
    last = None
    while not stop.wait(every_s):
        now = status()
        if now != last:
            logging.info("%s: %s", describe, now)
            last = now
    signum = received[0] if received else signal.SIGTERM
    logging.info("%s: %s received, stopping", describe, signal.Signals(signum).name)
    t0 = time.monotonic()
    server.stop()
    logging.info("%s: stopped in %.1f s", describe, time.monotonic() - t0)
    return int(signum)


def _dispatcher() -> None:
    if FLAGS.port is None or not 0 < FLAGS.port < 65536:
        raise app.UsageError(f"--port: a dispatcher needs a port in 1..65535 ({USAGE})")
    server = make_dispatcher(FLAGS.port, FLAGS.work_dir, FLAGS.worker_timeout_s,
                             FLAGS.job_gc_timeout_s)
    mode = (f"fault tolerant, journal in {FLAGS.work_dir}" if FLAGS.work_dir
            else "no --work_dir: its state is lost with this process")
    serve_until_signal(server, f"dispatcher grpc://0.0.0.0:{FLAGS.port} ({mode})",
                       lambda: dispatcher_status(server, FLAGS.port), FLAGS.status_every_s)


def dispatcher_status(server, port: int) -> str:
    """``N worker(s) registered: HOST:PORT, HOST:PORT (does not answer: lost)``: the workers the
    dispatcher on ``port`` lists (its GetWorkers RPC, 2 s), each probed (0.5 s), the whole
    look-up bounded (:func:`rnl_keras.service_workers.survey`: it never raises, so a status line
    cannot end the dispatcher); only the count when they cannot be listed."""
    from rnl_keras.service_workers import survey
    found = survey(f"localhost:{port}", rpc_timeout_s=2.0, probe_timeout_s=0.5)
    if "error" in found:
        return f"{server._num_workers()} worker(s) registered (not listed: {found['error']})"
    workers, lost = found["workers"], found["lost"]
    names = ", ".join(w + (" (does not answer: lost)" if w in lost else "") for w in workers)
    return f"{len(workers)} worker(s) registered" + (f": {names}" if names else "")


def _worker() -> None:
    if not FLAGS.dispatcher:
        raise app.UsageError(f"--dispatcher: a worker needs the dispatcher's HOST:PORT ({USAGE})")
    server = make_worker(_host_port(FLAGS.dispatcher), FLAGS.port or 0, FLAGS.worker_host)
    serve_until_signal(server, f"worker {FLAGS.worker_host}:{server._server.bound_port()} of "
                       f"dispatcher {FLAGS.dispatcher}",
                       lambda: f"{server._num_tasks()} task(s) running", FLAGS.status_every_s)


def main(argv):
    if len(argv) != 2 or argv[1] not in ("dispatcher", "worker"):
        raise app.UsageError(USAGE)
    logging.set_verbosity(logging.INFO)
    try:
        _dispatcher() if argv[1] == "dispatcher" else _worker()
    except app.UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - port in use, unreachable dispatcher, ...: one line
        print(f"data_service.py {argv[1]}: FAILED: {type(err).__name__}: {err}", file=sys.stderr,
              flush=True)
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)   # TensorFlow's server threads must not delay the exit


if __name__ == "__main__":
    app.run(main)
