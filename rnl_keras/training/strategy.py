"""One ``tf.distribute`` strategy for every setting, and who may write files.

``default`` is the single-device strategy, ``mirrored`` all local GPUs (or the logical CPU
devices made by :func:`configure_cpu_devices`), ``multi_worker`` MultiWorkerMirroredStrategy
reading ``TF_CONFIG``. The custom loop in :mod:`rnl_keras.training.loop` runs the same code on all
three (``model.fit`` fails under MultiWorkerMirroredStrategy with Keras 3, keras-team/keras#20585).
"""
from __future__ import annotations

import faulthandler
import json
import os

import tensorflow as tf

from rnl_keras.training.config import ConfigError
from rnl_keras.training import rendezvous
from rnl_keras.training.model_dir import worker_dir


def configure_cpu_devices(count: int) -> None:
    """Split the (first) CPU into ``count`` logical devices. Must run before TF initialises."""
    if count <= 0:
        return
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConfigError("strategy", f"TF_CONFIG is not valid JSON ({err})") from None


def make_strategy(name: str, cpu_devices: int = 0,
                  peer_timeout_s: float = 600.0) -> tf.distribute.Strategy:
    """Create the strategy; raises ConfigError for an impossible setting.

    Multi-worker: first waits (at most ``peer_timeout_s``) until every peer of ``TF_CONFIG``
    answers (raises ``rendezvous.PeerTimeoutError`` naming the missing ones), then starts the
    cluster; should that still hang, the process ends after ``peer_timeout_s`` with a dump of
    where it waited (``faulthandler``: TensorFlow holds the GIL there).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            devices = [d.name for d in gpus]
        else:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=None if gpus else tf.distribute.ReductionToOneDevice())
    if name == "multi_worker":
        cfg = _tf_config()
        if not cfg.get("cluster") or not cfg.get("task"):
            raise ConfigError("strategy", "multi_worker needs TF_CONFIG with 'cluster' and "
                              "'task' (see rnl_keras/training/strategy.py)")
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        own, peers = cluster_tasks()
        if own:
            rendezvous.wait_for_peers(own, peers, peer_timeout_s)
        faulthandler.dump_traceback_later(peer_timeout_s, exit=True)
        try:
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        finally:
            faulthandler.cancel_dump_traceback_later()
    raise ConfigError("strategy", f"unknown strategy {name!r}")


def cluster_tasks() -> tuple[str | None, dict[str, str]]:
    """(this task's address, {"<type> <index>": address} of the other chief / worker tasks),
    read from ``TF_CONFIG``."""
    cfg = _tf_config()
    task = cfg.get("task") or {}
    me = (task.get("type"), int(task.get("index", 0) or 0))
    own, peers = None, {}
    for job, addresses in (cfg.get("cluster") or {}).items():
        if isinstance(addresses, dict):
            addresses = [addresses[k] for k in sorted(addresses, key=int)]
        for index, address in enumerate(addresses or []):
            if (job, index) == me:
                own = address
            elif job in ("chief", "worker"):
                peers[f"{job} {index}"] = address
    return own, peers


def peer_addresses() -> list[str]:
    """The other tasks of the ``TF_CONFIG`` cluster, as ``"<type> <index> at <host:port>"``."""
    return [f"{name} at {address}" for name, address in cluster_tasks()[1].items()]


def chief_by_tf_config(strategy_name: str) -> bool:
    """Whether this process will be the chief, read from ``TF_CONFIG`` before any strategy
    exists (so that ``--model_dir`` can be checked before any work)."""
    if strategy_name != "multi_worker":
        return True
    task = _tf_config().get("task") or {}
    if task.get("type") == "chief":
        return True
    has_chief = "chief" in (_tf_config().get("cluster") or {})
    return task.get("type") == "worker" and int(task.get("index", 0) or 0) == 0 and not has_chief


def task_info(strategy) -> tuple[str | None, int]:
    """(task_type, task_id) of this process; (None, 0) outside multi-worker."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def num_workers(strategy) -> int:
    return int(getattr(strategy.extended, "_num_workers", 1) or 1)


def is_chief(strategy) -> bool:
    """The chief writes model_dir; it is task 'chief' or, without one, worker 0."""
    task_type, task_id = task_info(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in (_tf_config().get("cluster") or {})
    return task_type == "worker" and task_id == 0 and not has_chief


def write_dir(model_dir: str, strategy, sub: str = "") -> str:
    """Where this process writes ``sub``: model_dir on the chief, a private temp dir elsewhere.

    Non-chief workers must still take part in checkpoint saving (it is collective), so they
    write to a throw-away directory (the standard MultiWorkerMirroredStrategy pattern).
    """
    if is_chief(strategy):
        path = os.path.join(model_dir, sub) if sub else model_dir
    else:
        task_type, task_id = task_info(strategy)
        base = worker_dir(task_type, task_id)   # removed when the process ends (train.py)
        path = os.path.join(base, sub) if sub else base
    os.makedirs(path, exist_ok=True)
    return path
