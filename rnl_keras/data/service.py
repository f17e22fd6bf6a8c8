"""Decode, sample and augment on tf.data service workers; the trainer only batches and feeds.

The tf.data service (``tf.data.experimental.service``) runs a dataset *definition* (its graph,
serialised) on worker processes, possibly on other machines, and streams the elements to the
trainer. Two consequences shape this module:

* **Only TFRecord shards can be served.** Video files and frame folders are decoded by Python
  (PyAV) inside ``tf.py_function``; a serialised graph holds only a token naming a function in
  the registry of the process that built it, so a worker process fails with ``Could not find
  callback with key=pyfunc_0 in the registry`` (verified with TensorFlow 2.21). Shards written by
  ``pipelines/prepare_data.py`` are decoded by pure TF ops (parse, ``decode_jpeg``, crop), which
  is also where the throughput is; workers (``pipelines/data_service.py worker``) need nothing but
  TensorFlow. :func:`check_service_source` refuses the other sources.
* **Bad samples travel with the data.** A worker cannot write into the trainer's
  :class:`~rnl_keras.data.errors.BadSampleLog`. Each shard's records are counted on the worker
  (records cut off, corrupt or undecodable: all records its manifest promises that did not arrive
  decoded); a shard that lost ``N`` records sends one marker element ``(path, N)``, which the
  trainer records by name (``on_bad_sample="skip"``) or raises on (``"raise"``), then drops.

Processing mode: ``"distributed_epoch"`` (``ShardingPolicy.DYNAMIC``). The dispatcher hands out
the shard list one shard (split) at a time to whichever worker asks next, so one pass of a job
reads every shard exactly once across all workers: every clip is seen once per epoch, however
many workers there are, and fast workers take more shards. (``"parallel_epochs"`` would let
every worker read the whole list: N workers, N copies of each clip per epoch.) Each epoch is a
new job. Under multi-worker training every trainer joins the same job (same ``job_name``) and
reads its share: the clips of one pass are split between the trainers as they ask for them.
The order is not deterministic (it depends on which worker is faster), so a resumed epoch draws
its remaining steps from a fresh pass.

A lost worker. When a worker that holds part of a pass dies, TensorFlow's client waits for it
for ever. The trainer (and ``evaluate.py``) bound every read by ``--data_service_timeout_s``; when
it passes they end (exit 1) with :func:`stall_report`: the phase, the dispatcher, and the lost
worker by address, e.g. ``Lost: worker 10.0.0.3:5051 does not answer (ConnectionRefusedError:
...); the clips it held in this pass are not delivered. Still answering: 10.0.0.2:5051``.
TensorFlow's Python API lists no workers; :mod:`rnl_keras.service_workers` asks the
dispatcher's own ``GetWorkers`` RPC (every worker registered since it, or its journal, started;
lost ones stay listed) and probes each address with a bounded TCP connect (the addresses are
those the trainer reads from, ``--worker_host``). That look-up takes at most ~7 s, parses only a
protobuf list of ``HOST:PORT`` strings, and fails soft: when the workers cannot be learned the
message says why and points at the dispatcher's log (``Lost worker HOST:PORT due to timeout``).
A worker whose process is frozen (SIGSTOP, a hung host whose kernel still answers) accepts the
TCP connect, so it is listed as still answering: the message then names no lost worker, and the
dispatcher's log (once its worker timeout passes) is the place to look.

Augmentation semantics are those of local input: the shard order of each epoch is a
permutation drawn from the epoch's seed, and each clip's frame sampling, crop and flip come from
a stateless seed folded from (seed, shard, position in the shard), so they are a pure function
of the epoch seed and the clip, independent of the worker that decodes it; every epoch draws
new ones.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from rnl_keras.data import augment, sampling
from rnl_keras.data.config import DataConfig
from rnl_keras.data.delivery import DeliveryLog
from rnl_keras.data.errors import BadSampleError, BadSampleLog
from rnl_keras.data.list_file import validate_list_file
from rnl_keras.data.service_address import check_service_address
from rnl_keras.data.tfrecord import parse_sequence_example, read_manifest

PROCESSING_MODE = "distributed_epoch"
LOST_REASON = ("records cut off, corrupt or undecodable (found by a tf.data service worker: "
               "{lost} of the {expected} records its manifest lists)")


class DataServiceError(ValueError):
    """``--data_service`` cannot be used as asked; the message names the flag and why."""


def check_service_source(cfg: DataConfig) -> None:
    """Refuse sources the service cannot decode remotely (see the module docstring)."""
    if cfg.source != "tfrecord":
        raise DataServiceError(
            f"--data_service needs --data_source=tfrecord, not {cfg.source!r}: {cfg.source} "
            "input is decoded by Python (PyAV / eager JPEG) inside tf.py_function, which the "
            "tf.data service cannot run on its worker processes (the serialised graph names a "
            "function that only exists in the trainer). Write TFRecord shards with "
            "pipelines/prepare_data.py (decoded by TensorFlow ops on the workers).")


def _calls(cfg: DataConfig) -> int:
    return tf.data.AUTOTUNE if cfg.num_parallel_calls in (None, -1) else int(cfg.num_parallel_calls)


def _shard_table(cfg: DataConfig, shuffle: bool):
    """(paths, expected record counts, shard ids), the paths permuted by ``cfg.seed`` if shuffle."""
    shards = validate_list_file(cfg)
    expected = [int(read_manifest(s)["num_examples"]) for s in shards]
    order = np.arange(len(shards))
    if shuffle:
        order = np.random.default_rng(cfg.seed or 0).permutation(len(shards))
    return ([shards[i] for i in order], [expected[i] for i in order],
            [int(i) for i in order])


def _counted(cfg: DataConfig, decoded, path, expected, blank):
    """Follow a shard's decoded elements with one marker when fewer than ``expected`` arrived.

    Elements are ``(payload, bad_path, bad_count)``: ``bad_count`` 0 for a clip; the marker has
    ``blank`` as payload, the shard's path and the number of records lost.
    """
    marked = decoded.map(lambda p: (p, tf.constant(False))).concatenate(
        tf.data.Dataset.from_tensors((blank, tf.constant(True))))
    counted = marked.scan(tf.constant(0, tf.int64), lambda n, el: (
        n + tf.cast(tf.logical_not(el[1]), tf.int64), (el[0], el[1], n)))
    out = counted.map(lambda p, end, n: (
        p, tf.where(end, path, tf.constant("")),
        tf.where(end, tf.maximum(expected - n, 0), tf.constant(0, tf.int64)),
        tf.logical_or(tf.logical_not(end), n < expected)))

    def kept(p, bad_path, bad_count, keep):
        return keep

    def dropped_flag(p, bad_path, bad_count, keep):
        return p, bad_path, bad_count
    return out.filter(kept).map(dropped_flag)


def _served(cfg: DataConfig, decode_fn, blank, shuffle: bool):
    """The worker-side dataset: shards -> decoded payloads with bad-sample markers."""
    paths, expected, ids = _shard_table(cfg, shuffle)
    files = tf.data.Dataset.from_tensor_slices((tf.constant(paths), tf.constant(expected, tf.int64),
                                                tf.constant(ids, tf.int64)))

    def per_shard(path, n_expected, shard_id):
        records = tf.data.TFRecordDataset(path).ignore_errors().enumerate()
        decoded = records.map(lambda pos, rec: decode_fn(rec, shard_id, pos),
                              num_parallel_calls=_calls(cfg), deterministic=True)
        # Undecodable records are dropped here and counted at the shard's end; the trainer
        # applies the bad-sample policy to the count (account_bad_samples), naming the shard.
        decoded = decoded.ignore_errors()
        return _counted(cfg, decoded, path, n_expected, blank)

    # The shard list is the one source: in distributed_epoch mode each shard is one split.
    return files.interleave(per_shard, cycle_length=max(1, cfg.cycle_length),
                            num_parallel_calls=_calls(cfg), deterministic=False)


def clip_seed(seed: int, shard_id, pos):
    """The stateless seed of one clip: a pure function of (seed, shard, position in the shard)."""
    base = tf.constant([int(seed or 0) & 0x7FFFFFFF, 0x5EED], tf.int64)
    return tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(base, shard_id), pos)


def served_train_dataset(cfg: DataConfig) -> tf.data.Dataset:
    """The training dataset the workers run: ``({"clip", "label", "video_index"}, bad_path,
    bad_count)`` per clip.

    ``clip`` float32 ``(T, S, S, 3)`` augmented exactly as :func:`make_train_dataset` does
    (TSN/dense sampling, one crop box and flip per clip, normalisation).
    """
    t, s = cfg.num_frames, cfg.image_size

    def decode(record, shard_id, pos):
        ex = parse_sequence_example(record)
        seeds = tf.random.experimental.stateless_split(clip_seed(cfg.seed, shard_id, pos), 2)
        idx = tf.reshape(sampling.train_indices(ex["num_frames"], cfg, seeds[0]), [-1])
        frames = _decode_jpegs(tf.gather(ex["frames"], idx))
        clip, label, _ = augment.train_augment(
            frames, ex["label"], cfg, tf.random.experimental.stateless_split(seeds[1], 2)[1])
        clip.set_shape([t, s, s, 3])
        return {"clip": clip, "label": label, "video_index": ex["index"]}

    blank = {"clip": tf.zeros([t, s, s, 3]), "label": tf.constant(-1, tf.int32),
             "video_index": tf.constant(-1, tf.int32)}
    ds = _served(cfg, decode, blank, shuffle=True)
    if cfg.shuffle_buffer > 1:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=cfg.seed)
    return ds.prefetch(tf.data.AUTOTUNE)


def served_eval_dataset(cfg: DataConfig) -> tf.data.Dataset:
    """The evaluation dataset the workers run: ``({"clip", "label", "video_index"}, bad_path,
    bad_count)`` per video, ``clip`` holding its ``cfg.views_per_video`` test views."""
    views = cfg.views_per_video
    s = cfg.image_size

    def decode(record, shard_id, pos):
        ex = parse_sequence_example(record)
        idx = tf.reshape(sampling.eval_indices(ex["num_frames"], cfg), [-1])
        frames = _decode_jpegs(tf.gather(ex["frames"], idx))
        clips = tf.reshape(frames, tf.concat([[cfg.num_test_clips, cfg.num_frames],
                                              tf.shape(frames)[1:]], 0))
        out = augment.eval_views(clips, cfg)
        out.set_shape([views, cfg.num_frames, s, s, 3])
        return {"clip": out, "label": tf.fill([views], ex["label"]),
                "video_index": tf.fill([views], ex["index"])}

    blank = {"clip": tf.zeros([views, cfg.num_frames, s, s, 3]),
             "label": tf.fill([views], -1), "video_index": tf.fill([views], -1)}
    return _served(cfg, decode, blank, shuffle=False).prefetch(tf.data.AUTOTUNE)


def _decode_jpegs(encoded):
    return tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), encoded,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def from_service(served: tf.data.Dataset, address: str, job_name: str | None,
                 timeout_s: float = 10.0) -> tf.data.Dataset:
    """Register ``served`` with the dispatcher at ``address`` and read it (distributed_epoch):
    elements ``(payload, bad_path, bad_count)``, one clip (or one video's views) each.

    Args:
      served: a dataset of :func:`served_train_dataset` / :func:`served_eval_dataset`.
      address: ``grpc://HOST:PORT`` of the dispatcher (checked to answer within ``timeout_s``).
      job_name: consumers with the same name share one pass (multi-worker trainers); None:
        a private job.
      timeout_s: bound on reaching the dispatcher.

    Raises:
      DataServiceError: nothing answers at ``address`` within ``timeout_s``.
    """
    check_service_address(address, timeout_s)
    return served.apply(tf.data.experimental.service.distribute(
        processing_mode=PROCESSING_MODE, service=address, job_name=job_name,
        compression="AUTO"))


def account_bad_samples(ds: tf.data.Dataset, cfg: DataConfig, record_indices) -> tf.data.Dataset:
    """Trainer side: record (or raise on) the markers, drop them, and return the payloads.

    Args:
      ds: elements ``(payload, bad_path, bad_count)`` from the service.
      cfg: its ``on_bad_sample`` decides: ``"skip"`` records ``bad_count`` bad samples named by
        the shard in :class:`BadSampleLog`; ``"raise"`` raises :class:`BadSampleError`.
      record_indices: payload -> int32 video indices to note in :class:`DeliveryLog` (None: no).
    """
    def note(path_t, count_t):
        path = path_t.numpy().decode("utf-8", "surrogateescape")
        lost = int(count_t.numpy())
        expected = (read_manifest(path) or {}).get("num_examples", "?")
        reason = LOST_REASON.format(lost=lost, expected=expected)
        if cfg.on_bad_sample == "raise":
            raise BadSampleError(path, reason)
        BadSampleLog.record(path, reason, count=lost)
        return True

    def deliver(indices):
        DeliveryLog.add(indices.numpy().reshape(-1).tolist())
        return True

    def handle(payload, bad_path, bad_count):
        ok = tf.cond(bad_count > 0, lambda: tf.py_function(note, [bad_path, bad_count], tf.bool),
                     lambda: tf.constant(True))
        if record_indices is not None:
            ok = tf.logical_and(ok, tf.cond(
                bad_count > 0, lambda: tf.constant(True),
                lambda: tf.py_function(deliver, [record_indices(payload)], tf.bool)))
        return payload, tf.logical_and(ok, bad_count == 0)

    def keep(payload, ok):
        return ok

    def payload_of(payload, ok):
        return payload
    return ds.map(handle).filter(keep).map(payload_of)


def stall_report(address: str, what: str, timeout_s: float | None = None) -> str:
    """The message for a stalled service read: no batch from ``address`` in time, and why.

    The trainer (and ``evaluate.py``) call it when ``--data_service_timeout_s`` passes without a
    batch, just before the process ends; their watchdog prefixes ``<prog>: FAILED: no progress
    for N s``. It asks the dispatcher for its registered workers and probes each one
    (:func:`rnl_keras.service_workers.survey`, at most ~7 s in all, never raising): a worker
    that accepts no connection is named as lost. When the workers cannot be learned the message
    says so and points at the dispatcher's log, as before.

    Args:
      address: ``grpc://HOST:PORT`` of the dispatcher.
      what: what the process was doing (``"epoch 1 step 5"``).
      timeout_s: the --data_service_timeout_s that passed (named in the message when given).
    Returns:
      The message (one paragraph), naming the phase, the dispatcher and the lost worker(s).
    """
    from rnl_keras.service_workers import survey
    limit = "" if timeout_s is None else f"={timeout_s:g}"
    head = (f"while {what}: no batch from the tf.data service {address} within "
            f"--data_service_timeout_s{limit}.")
    return f"{head} {workers_report(survey(address), address)}"


RERUN = "and rerun (train.py resumes from its last checkpoint)"


def workers_report(found: dict, address: str) -> str:
    """The part of :func:`stall_report` about the workers, from a ``survey`` result."""
    if "error" in found:
        return ("The registered workers could not be learned from the dispatcher "
                f"({found['error']}). A worker holding part of this pass was probably lost: the "
                "dispatcher's log names it ('Lost worker HOST:PORT'); the clips it held are not "
                f"delivered. Restart the worker (or check that workers are registered) {RERUN}")
    workers, lost = found["workers"], found["lost"]
    if not workers:
        return ("No worker is registered with the dispatcher: start one ('python "
                f"pipelines/data_service.py worker --dispatcher={address}') {RERUN}")
    live = [w for w in workers if w not in lost]
    if not lost:
        return (f"All {len(workers)} registered worker(s) answer ({', '.join(workers)}): none "
                "was lost. A worker may be stalled (a slow or hung file system under the shards) "
                "or the dispatcher may have lost its state: see their logs, or raise "
                f"--data_service_timeout_s, {RERUN}")
    named = "; ".join(f"worker {w} does not answer ({err})" for w, err in lost.items())
    one = len(lost) == 1
    rest = f" Still answering: {', '.join(live)}." if live else " No registered worker answers."
    return (f"Lost: {named}; the clips {'it' if one else 'they'} held in this pass are not "
            f"delivered.{rest} Restart the lost worker{'' if one else 's'} (same --worker_host "
            f"and --port) {RERUN}")


def service_train_dataset(cfg: DataConfig, batch_size: int, address: str, job_name: str | None,
                          timeout_s: float = 10.0) -> tf.data.Dataset:
    """Training batches ``(clips (B, T, S, S, 3), labels (B,))`` decoded on the service.

    One pass (a ``distributed_epoch`` job) per dataset; ``batch_size`` is this pipeline's batch
    (the per-replica batch under a strategy). Delivered clips are noted in :class:`DeliveryLog`.
    """
    check_service_source(cfg)
    ds = from_service(served_train_dataset(cfg), address, job_name, timeout_s)
    ds = account_bad_samples(ds, cfg, record_indices=lambda p: p["video_index"])
    ds = ds.map(lambda p: (p["clip"], p["label"]))
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def service_eval_dataset(cfg: DataConfig, batch_size: int, address: str, job_name: str | None,
                         timeout_s: float = 10.0) -> tf.data.Dataset:
    """Evaluation batches ``{"clip", "label", "video_index"}`` decoded on the service (views of
    one video stay adjacent; videos arrive in no fixed order)."""
    check_service_source(cfg)
    ds = from_service(served_eval_dataset(cfg), address, job_name, timeout_s)
    ds = account_bad_samples(ds, cfg, record_indices=None)
    return ds.unbatch().batch(batch_size).prefetch(tf.data.AUTOTUNE)
