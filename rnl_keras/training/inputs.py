"""The task's inputs: training and validation datasets, their checks, and bounded service reads.

``data_config`` turns the config's data section into the ``rnl_keras.data.DataConfig`` of a
split; ``check_data`` validates the list and classes files before any work; :class:`TaskInputs`
builds one input pipeline's dataset (local ``rnl_keras.data`` pipelines, a tf.data service
(``--data_service``) or in-memory datasets given by tests); :class:`BatchReader` bounds each
read from the service by ``--data_service_timeout_s``. Each epoch's input order is a pure
function of (``--seed``, epoch) (:func:`epoch_seed`), so a resumed epoch rebuilds the same stream
and skips the batches already trained on.
"""
from __future__ import annotations

import math
import os

import numpy as np

from rnl_keras.training.config import ConfigError, TrainConfig


def epoch_seed(seed: int, epoch: int) -> int:
    """The input-pipeline seed of one epoch (same on every worker, new every epoch)."""
    return int((seed * 1_000_003 + epoch * 7_919 + 17) % (2**31 - 1))


def data_config(cfg: TrainConfig, split: str, seed: int | None = None):
    """The ``rnl_keras.data.DataConfig`` of the training or (single-view) validation split.

    Args:
      cfg: the run's config (its ``data`` section is read).
      split: "train" or "val".
      seed: the pipeline seed (:func:`epoch_seed`); None for validation.
    """
    from rnl_keras.data import DataConfig
    d, train = cfg.data, split == "train"
    return DataConfig(
        source=d.data_source, list_file=d.train_list if train else d.val_list,
        root=d.data_root if train else d.val_root, frame_template=d.frame_template,
        num_classes=d.num_classes, num_frames=d.num_frames, sampling=d.sampling,
        dense_stride=d.dense_stride, test_clips=1, test_crops=1, image_size=d.image_size,
        resize_shorter=d.resize_shorter, flip=d.flip, on_bad_sample=d.on_bad_sample,
        seed=seed, deterministic=d.deterministic_data if train else True,
        num_parallel_calls=d.num_parallel_calls, shuffle_buffer=d.shuffle_buffer)


def _check_classes_file(d) -> None:
    if not d.classes_file:
        return
    if not os.path.isfile(d.classes_file):
        raise ConfigError("classes_file", f"no such file: {d.classes_file}")
    with open(d.classes_file, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) != d.num_classes:
        raise ConfigError("num_classes", f"{d.num_classes} does not match "
                          f"--classes_file={d.classes_file} ({len(names)} classes)")


def _list_problems(err, flag: str, num_classes: int) -> ConfigError:
    """The ConfigError of a ListFileError: every bad line at once, labels named first."""
    problems = getattr(err, "problems", None) or [str(err)]
    labels = [p for p in problems if "label" in p and "outside" in p]
    prefix = ""
    if labels:
        prefix = (f"--num_classes={num_classes} does not match the labels of "
                  f"--{flag} ({len(labels)} line(s) with a label >= num_classes); ")
    return ConfigError(flag, prefix + f"{len(problems)} bad line(s):\n  "
                       + "\n  ".join(str(p) for p in problems))


def check_data(cfg: TrainConfig) -> int:
    """Validate list files and classes file against ``--num_classes`` before any work.

    Returns the number of training samples (0 when unknown, e.g. TFRecord shards without counts).
    Raises ConfigError naming the flag; list-file problems list every bad line at once.
    """
    from rnl_keras.data import ListFileError, validate_list_file
    d = cfg.data
    _check_classes_file(d)
    count = 0
    for flag, split in (("train_list", "train"), ("val_list", "val")):
        path = d.train_list if split == "train" else d.val_list
        if not path:
            continue
        if d.data_source != "tfrecord" and not os.path.isfile(path):
            raise ConfigError(flag, f"list file not found: {path}")
        try:
            entries = validate_list_file(data_config(cfg, split, seed=0))
        except ListFileError as err:
            raise _list_problems(err, flag, d.num_classes) from None
        if split == "train":
            if not entries:
                raise ConfigError(flag, f"{path} holds no samples")
            count = len(entries) if d.data_source != "tfrecord" else 0
    return count


def service_probe_s(cfg: TrainConfig) -> float:
    """How long to wait for the dispatcher to answer when a pipeline is made."""
    return min(30.0, cfg.data.data_service_timeout_s)


def service_run_id(sum_over_workers) -> str:
    """--data_service: the name of this run's jobs (see :class:`TaskInputs`).

    Every worker of a multi-worker run must join the same job of a pass (each then reads its
    share), and a restarted run must not join the half-read job of the run before it: the name
    is a random number summed over the workers (identical on all, new every run).

    Args:
      sum_over_workers: sums a float64 array over the workers (the identity on one worker).
    """
    run_id = float(np.random.default_rng().integers(1, 2**31))
    return f"{int(sum_over_workers(np.array([run_id]))[0]):x}"


class TaskInputs:
    """One input pipeline's training or validation dataset.

    Args:
      cfg: the run's config.
      steps_per_epoch: the steps of one epoch (at most; a pass may end sooner).
      train_dataset_fn: ``fn(ctx, seed, per_replica_batch)`` -> batches ``(clips, labels)``
        (tests); default the ``rnl_keras.data`` pipeline of ``--train_list``.
      val_dataset_fn: ``fn(ctx, batch)`` -> ``{"clip", "label"}`` batches (tests).
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, train_dataset_fn=None,
                 val_dataset_fn=None):
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.train_dataset_fn = train_dataset_fn
        self.val_dataset_fn = val_dataset_fn
        self.service_run = None   # the job-name stem of --data_service (service_run_id)
        self._val_passes = 0

    def train(self, ctx, epoch: int, skip_steps: int, per_replica_batch: int):
        """Epoch ``epoch``'s batches for input pipeline ``ctx``, the first ``skip_steps`` steps
        skipped: one pass (at most ``steps_per_epoch`` steps), then end-of-pass markers."""
        from rnl_keras.data import pad_end_of_pass
        cfg = self.cfg
        seed = epoch_seed(cfg.runtime.seed, epoch)
        skip = skip_steps
        if self.train_dataset_fn is not None:
            ds = self.train_dataset_fn(ctx, seed, per_replica_batch)
        elif cfg.data.data_service:
            # The service's order is not reproducible: a resumed epoch trains its remaining
            # steps on a fresh pass (rnl_keras.data.service), nothing to skip.
            from rnl_keras.data.service import service_train_dataset
            ds = service_train_dataset(
                data_config(cfg, "train", seed), ctx.get_per_replica_batch_size(
                    cfg.optim.batch_size), cfg.data.data_service,
                f"rnl-train-{self.service_run}-e{epoch}", service_probe_s(cfg))
            skip = 0
        else:
            from rnl_keras.data import make_train_dataset
            ds = make_train_dataset(data_config(cfg, "train", seed), cfg.optim.batch_size,
                                    input_context=ctx, repeat=False)
        # Every global step takes one batch per local replica from this pipeline.
        per_step = max(ctx.num_replicas_in_sync // ctx.num_input_pipelines, 1)
        remaining = self.steps_per_epoch - skip_steps
        return pad_end_of_pass(ds.skip(skip * per_step).take(remaining * per_step))

    def val(self, ctx, batch: int, workers: int):
        """The validation split's ``{"clip", "label", ...}`` batches of ``batch`` clips for
        worker ``ctx.input_pipeline_id`` of ``workers`` (each reads its share)."""
        cfg = self.cfg
        if self.val_dataset_fn is not None:
            ds = self.val_dataset_fn(ctx, batch)
        elif cfg.data.data_service:   # every trainer joins the pass's job and reads its share
            from rnl_keras.data.service import service_eval_dataset
            self._val_passes += 1
            ds = service_eval_dataset(data_config(cfg, "val"), batch, cfg.data.data_service,
                                      f"rnl-val-{self.service_run}-{self._val_passes}",
                                      service_probe_s(cfg))
        else:
            from rnl_keras.data import make_eval_dataset
            ds = make_eval_dataset(data_config(cfg, "val"), batch * workers, input_context=ctx)
        if cfg.data.val_max_videos:
            ds = ds.take(max(1, math.ceil(cfg.data.val_max_videos / (batch * workers))))
        return ds


def stall_message(address: str, timeout_s: float, what: str) -> str:
    """The message for no batch from the tf.data service within ``timeout_s``: the phase, the
    dispatcher and the lost worker(s) (:func:`rnl_keras.data.service.stall_report`)."""
    from rnl_keras.data.service import stall_report
    return stall_report(address, what, timeout_s)


class BatchReader:
    """``next(iterator)``; with a tf.data service each read is bounded by ``timeout_s`` (the
    process then ends with :func:`stall_message`, built only when the limit passes). Used by the
    trainer and by ``evaluate.py``.

    Args:
      address: ``--data_service`` (``grpc://HOST:PORT``); empty / None: reads are not bounded.
      timeout_s: ``--data_service_timeout_s``.
      prog: the program named by the exit message.
    """

    def __init__(self, address: str | None, timeout_s: float, prog: str = "train.py"):
        self.address, self.timeout_s, self.prog = address, timeout_s, prog
        self._deadline = None

    def start(self) -> None:
        """Arm-able from now on (a watchdog thread; only with a service address)."""
        if self.address and self._deadline is None:
            from rnl_keras.data import service   # noqa: F401  (imported here, not at fire time)
            from rnl_keras.training.failures import Deadline
            self._deadline = Deadline(prog=self.prog)

    def next(self, iterator, what):
        """The next element; ``what``: the phase (a string, or a function returning it)."""
        if self._deadline is None:
            return next(iterator)
        what = what() if callable(what) else what
        self._deadline.arm(self.timeout_s, lambda: stall_message(self.address, self.timeout_s,
                                                                 what))
        try:
            return next(iterator)
        finally:
            self._deadline.disarm()

    def iterate(self, iterable, what):
        """Every element of ``iterable``, each read bounded as :meth:`next`."""
        iterator = iter(iterable)
        while True:
            try:
                yield self.next(iterator, what)
            except StopIteration:
                return
