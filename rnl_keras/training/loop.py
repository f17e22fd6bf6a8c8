"""The custom training loop: one design for the default, mirrored and multi-worker strategies.

``model.fit`` fails under MultiWorkerMirroredStrategy with Keras 3 (keras-team/keras#20585), so
training is a ``tf.function`` train step run with ``strategy.run`` over a dataset distributed with
``strategy.distribute_datasets_from_function`` (each input pipeline gets an ``InputContext`` and
batches the per-replica batch). The same code runs on one device, several local devices and
several workers.

Resuming. The checkpoint (``tf.train.Checkpoint`` in ``<model_dir>/ckpt``) holds the model, the
optimizer (iterations, momentum), the epoch, the step inside the epoch, the best validation top-1
and the training time so far. Each epoch's input order is a pure function of (``--seed``, epoch):
the pipeline is seeded with ``epoch_seed(seed, epoch)`` and deterministic, so a resumed epoch
rebuilds the same stream and skips the batches already trained on. Nothing is repeated or lost
after a crash or ``kill -9`` beyond the steps since the last checkpoint.

Files. Only the chief writes ``model_dir`` (checkpoints, TensorBoard, ``best.keras``,
``final.keras``, ``summary.json``; every file via a temporary name and ``os.replace``). Other
workers take part in the (collective) checkpoint saves but write to a private temp directory.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from rnl_keras.atomic_io import write_atomic, write_json_atomic
from rnl_keras.training import checkpointing, optimizer as optim, strategy as strat
from rnl_keras.training import model_dir as mdir
from rnl_keras.training.guard import RunGuard
from rnl_keras.training.config import ConfigError, TrainConfig


def epoch_seed(seed: int, epoch: int) -> int:
    """The input-pipeline seed of one epoch (same on every worker, new every epoch)."""
    return int((seed * 1_000_003 + epoch * 7_919 + 17) % (2**31 - 1))


def weights_digest(variables) -> str:
    """sha256 of the values of ``variables`` (a model: its trainable weights), in order.

    Under multi-worker training the trainable weights are identical on every worker; BatchNorm
    moving statistics are per worker (each sees its own batches, as with PyTorch DDP without
    SyncBN) and the chief's are the ones saved.
    """
    if hasattr(variables, "trainable_weights"):
        variables = variables.trainable_weights
    h = hashlib.sha256()
    for w in variables:
        h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w.value)).tobytes())
    return h.hexdigest()


def data_config(cfg: TrainConfig, split: str, seed: int | None = None):
    """The ``rnl_keras.data.DataConfig`` of the training or (single-view) validation split."""
    from rnl_keras.data import DataConfig
    train = split == "train"
    return DataConfig(
        source=cfg.data_source, list_file=cfg.train_list if train else cfg.val_list,
        root=cfg.data_root if train else cfg.val_root, frame_template=cfg.frame_template,
        num_classes=cfg.num_classes, num_frames=cfg.num_frames, sampling=cfg.sampling,
        dense_stride=cfg.dense_stride, test_clips=1, test_crops=1, image_size=cfg.image_size,
        resize_shorter=cfg.resize_shorter, flip=cfg.flip, on_bad_sample=cfg.on_bad_sample,
        seed=seed, deterministic=cfg.deterministic_data if train else True,
        num_parallel_calls=cfg.num_parallel_calls, shuffle_buffer=cfg.shuffle_buffer)


def check_data(cfg: TrainConfig) -> int:
    """Validate list files and classes file against ``--num_classes`` before any work.

    Returns the number of training samples (0 when unknown, e.g. TFRecord shards without counts).
    Raises ConfigError naming the flag; list-file problems list every bad line at once.
    """
    from rnl_keras.data import ListFileError, validate_list_file
    if cfg.classes_file:
        if os.path.isfile(cfg.classes_file):
            with open(cfg.classes_file, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
            if len(names) != cfg.num_classes:
                raise ConfigError("num_classes", f"{cfg.num_classes} does not match "
                                  f"--classes_file={cfg.classes_file} ({len(names)} classes)")
        else:
            raise ConfigError("classes_file", f"no such file: {cfg.classes_file}")
    count = 0
    for flag, split in (("train_list", "train"), ("val_list", "val")):
        path = cfg.train_list if split == "train" else cfg.val_list
        if not path:
            continue
        if cfg.data_source != "tfrecord" and not os.path.isfile(path):
            raise ConfigError(flag, f"list file not found: {path}")
        try:
            entries = validate_list_file(data_config(cfg, split, seed=0))
        except ListFileError as err:
            problems = getattr(err, "problems", None) or [str(err)]
            labels = [p for p in problems if "label" in p and "outside" in p]
            prefix = ""
            if labels:
                prefix = (f"--num_classes={cfg.num_classes} does not match the labels of "
                          f"--{flag} ({len(labels)} line(s) with a label >= num_classes); ")
            raise ConfigError(flag, prefix + f"{len(problems)} bad line(s):\n  "
                              + "\n  ".join(str(p) for p in problems)) from None
        if split == "train":
            if not entries:
                raise ConfigError(flag, f"{path} holds no samples")
            count = len(entries) if cfg.data_source != "tfrecord" else 0
    return count


@dataclasses.dataclass
class _Counters:
    epoch: tf.Variable
    step_in_epoch: tf.Variable
    best_top1: tf.Variable
    best_epoch: tf.Variable
    train_seconds: tf.Variable
    clips_seen: tf.Variable


class Trainer:
    """Builds the model, optimizer, strategy and checkpoint from a TrainConfig and trains.

    Call :meth:`run` (returns the summary dict), then :meth:`close`. ``num_train`` (training
    samples) and ``train_dataset_fn`` / ``val_dataset_fn`` may be given to train on in-memory data
    (tests); by default the ``rnl_keras.data`` pipelines read ``cfg.train_list`` /
    ``cfg.val_list``. ``stop``: a :class:`rnl_keras.training.failures.StopSignals` (SIGINT /
    SIGTERM save a checkpoint, then :class:`~rnl_keras.training.failures.TrainingStopped`).
    """

    def __init__(self, cfg: TrainConfig, strategy=None, num_train: int | None = None,
                 train_dataset_fn=None, val_dataset_fn=None, out=None, stop=None):
        self.cfg = cfg
        self.out = out or sys.stdout
        self.guard = RunGuard(stop, cfg.peer_timeout_s, strat.peer_addresses()
                              if cfg.strategy == "multi_worker" and strategy is None else ())
        self.num_train = num_train if num_train is not None else check_data(cfg)
        self._service_deadline = self._service_run = None
        if cfg.data_service:   # nothing listening: a prompt, clear error before any work
            from rnl_keras.data.service_address import check_service_address
            check_service_address(cfg.data_service, self._service_probe_s())
        # Multi-worker: starting the cluster waits for every peer (bounded by make_strategy),
        # so does building the model (initial values are broadcast): --peer_timeout_s.
        self.guard.begin("starting the cluster")
        self.strategy = strategy or strat.make_strategy(cfg.strategy, cfg.cpu_devices,
                                                        cfg.peer_timeout_s)
        self.guard.stop.install()   # after the strategy: TensorFlow replaces the SIGTERM handler
        self.guard.begin("building the model", collective=True)
        self.replicas = self.strategy.num_replicas_in_sync
        cfg.check_replicas(self.replicas)
        self.chief = strat.is_chief(self.strategy)
        if cfg.steps_per_epoch:
            self.steps_per_epoch = cfg.steps_per_epoch
        elif self.num_train:
            self.steps_per_epoch = self.num_train // cfg.batch_size
            if self.steps_per_epoch < 1:
                raise ConfigError("batch_size", f"{cfg.batch_size} is larger than the "
                                  f"{self.num_train} training samples")
        else:
            raise ConfigError("steps_per_epoch", "is required when the number of training "
                              "samples is unknown (TFRecord shards)")
        self._train_dataset_fn = train_dataset_fn
        self._val_dataset_fn = val_dataset_fn
        self.per_replica_batch = cfg.per_replica_batch(self.replicas)
        self.micro_batch = self.per_replica_batch // cfg.grad_accum_steps
        self._build()
        self.guard.end()

    @property
    def where(self) -> str:
        """What the trainer is doing now (named by error messages)."""
        return self.guard.where

    def close(self) -> None:
        """Flush TensorBoard and remove this process's private checkpoint directory."""
        try:
            self.writer.flush()
        finally:
            if not self.chief:
                mdir.remove_own_worker_dirs()

    # ------------------------------------------------------------------------------------ setup
    def _print(self, msg: str) -> None:
        if self.chief:
            print(msg, file=self.out, flush=True)

    def _build_model_and_optimizer(self) -> None:
        """The model (every ablation flag, the ImageNet start), the parameter groups and the
        optimizer; called inside the strategy's scope. Records the start for summary.json."""
        cfg = self.cfg
        from rnl_keras.models import PretrainedWeightsError, tsm_resnet50, weights_record
        try:
            self.model = tsm_resnet50(cfg.num_classes, **cfg.model_kwargs())
        except PretrainedWeightsError as err:   # names the file and the first bad tensor
            raise ConfigError("pretrained_weights", str(err)) from None
        # After the model: an "imagenet" start is then downloaded into the cache.
        self.start_record = weights_record(cfg.weights_arg(), cfg.resnet_variant,
                                           include_top=cfg.num_classes == 1000)
        self.param_groups = optim.param_groups(self.model, cfg.param_groups)
        self.group_rows = optim.group_table(self.param_groups, self.model)
        self._print(f"Parameter groups (--param_groups={cfg.param_groups}; lr x base lr, decay "
                    f"x --weight_decay={cfg.weight_decay:g}):\n"
                    + optim.format_group_table(self.group_rows))
        self.schedule = optim.make_schedule(cfg, self.steps_per_epoch)
        self.optimizer = optim.make_optimizer(cfg, self.steps_per_epoch, self.schedule,
                                              groups=self.param_groups)
        self.optimizer.build(self.model.trainable_variables)

    def _build(self) -> None:
        cfg = self.cfg
        cfg.check_files()
        if cfg.mixed_precision == "bfloat16":
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        keras.utils.set_random_seed(cfg.seed)
        with self.strategy.scope():
            self._build_model_and_optimizer()

            def counter(dtype, value=0):
                return tf.Variable(value, dtype=dtype, trainable=False,
                                   synchronization=tf.VariableSynchronization.ON_WRITE,
                                   aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.counters = _Counters(
                epoch=counter(tf.int64), step_in_epoch=counter(tf.int64),
                best_top1=counter(tf.float64, -1.0), best_epoch=counter(tf.int64, -1),
                train_seconds=counter(tf.float64), clips_seen=counter(tf.int64))
        # --param_groups=release: GroupedSGD adds the decay itself, after gradient clipping.
        self.decayed = optim.decayed_variables(self.model) if cfg.param_groups == "uniform" else []
        self.ckpt_dir = os.path.join(cfg.model_dir, "ckpt")
        self.write_ckpt_dir = strat.write_dir(cfg.model_dir, self.strategy, "ckpt")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer,
            **{f.name: getattr(self.counters, f.name) for f in dataclasses.fields(_Counters)})
        self.manager = checkpointing.make_manager(self.checkpoint, self.write_ckpt_dir,
                                                  cfg.keep_checkpoints)
        if self.chief:
            os.makedirs(cfg.model_dir, exist_ok=True)
            write_json_atomic(os.path.join(cfg.model_dir, "param_groups.json"), {
                path: [g.name, g.lr_mult, g.decay_mult] for path, g in self.param_groups.items()})
            self.writer = tf.summary.create_file_writer(os.path.join(cfg.model_dir, "tb"))
        else:
            self.writer = tf.summary.create_noop_writer()
        self._train_step = self._make_train_step()
        self._end_of_pass = self._make_end_of_pass()
        self._eval_step = tf.function(lambda x: self.model(x, training=False),
                                      reduce_retracing=True)

    # ----------------------------------------------------------------------------- the step
    def _make_train_step(self):
        cfg, strategy = self.cfg, self.strategy
        model, opt = self.model, self.optimizer
        k, replicas, global_batch = cfg.grad_accum_steps, self.replicas, cfg.batch_size
        loss_fn = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=cfg.label_smoothing, reduction=None)
        decayed = self.decayed

        def replica_step(clips, labels):
            variables = model.trainable_variables
            clip_chunks = tf.split(clips, k) if k > 1 else [clips]
            label_chunks = tf.split(labels, k) if k > 1 else [labels]
            grads, ce_sum, correct = None, tf.constant(0.0), tf.constant(0.0)
            for x, y in zip(clip_chunks, label_chunks):   # micro-batches (gradient accumulation)
                with tf.GradientTape() as tape:
                    logits = tf.cast(model(x, training=True), tf.float32)
                    per_example = loss_fn(tf.one_hot(y, cfg.num_classes), logits)
                    # Sum over the replica's examples / GLOBAL batch: all-reduce SUM = mean.
                    loss = tf.reduce_sum(per_example) / global_batch
                    if cfg.weight_decay:
                        loss += optim.l2_penalty(decayed, cfg.weight_decay) / (replicas * k)
                g = tape.gradient(loss, variables)
                grads = g if grads is None else [a + b for a, b in zip(grads, g)]
                ce_sum += tf.reduce_sum(per_example)
                correct += tf.reduce_sum(tf.cast(
                    tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
            if cfg.clip_grad_norm > 0:
                if replicas > 1:
                    # Clip the all-reduced gradient; the optimizer sums again, hence / replicas.
                    ctx = tf.distribute.get_replica_context()
                    grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
                    grads, _ = tf.clip_by_global_norm(grads, cfg.clip_grad_norm)
                    grads = [g / replicas for g in grads]
                else:
                    grads, _ = tf.clip_by_global_norm(grads, cfg.clip_grad_norm)
            opt.apply_gradients(zip(grads, variables))
            return ce_sum, correct

        @tf.function(jit_compile=cfg.jit_compile)
        def train_step(clips, labels, stop):
            ce, correct = strategy.run(replica_step, args=(clips, labels))
            # The stop requests of every worker, summed: all of them stop after the same step.
            stops = strategy.run(tf.identity, args=(stop,))
            return (strategy.reduce(tf.distribute.ReduceOp.SUM, ce, axis=None),
                    strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
                    strategy.reduce(tf.distribute.ReduceOp.SUM, stops, axis=None))
        return train_step

    def _make_end_of_pass(self):
        """tf.function: True when any replica (on any worker) got an end-of-pass marker batch.

        An epoch is one pass over the training list (``rnl_keras.data.pad_end_of_pass``); the
        all-reduce makes every worker end the epoch at the same step.
        """
        from rnl_keras.data import is_end_of_pass
        strategy = self.strategy

        @tf.function
        def end_of_pass(labels):
            ended = strategy.run(lambda y: tf.cast(is_end_of_pass(y), tf.int32), args=(labels,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, ended, axis=None) > 0
        return end_of_pass

    # ------------------------------------------------------------------------------- data
    def _service_probe_s(self) -> float:
        return min(30.0, self.cfg.data_service_timeout_s)

    def _start_service_run(self) -> None:
        """--data_service: name this run's jobs. Every worker of a multi-worker run must join
        the same job of a pass (each then reads its share), and a restarted run must not join
        the half-read job of the run before it: the name is a random number summed over the
        workers (identical on all of them, new every run)."""
        if not self.cfg.data_service:
            return
        from rnl_keras.training.failures import Deadline
        self._service_deadline = self._service_deadline or Deadline()
        run_id = float(np.random.default_rng().integers(1, 2**31))
        if strat.num_workers(self.strategy) > 1:
            with self.guard.phase("agreeing on the tf.data service job name", collective=True):
                run_id = float(self._sum_over_workers(np.array([run_id]))[0])
        self._service_run = f"{int(run_id):x}"

    def _from_service(self, iterable, what):
        """Iterate ``iterable``; with --data_service each element is bounded by
        --data_service_timeout_s (the process then ends naming the dispatcher and ``what``)."""
        iterator = iter(iterable)
        while True:
            try:
                yield self._next_batch(iterator, what)
            except StopIteration:
                return

    def _next_batch(self, iterator, what):
        """``next(iterator)``; with --data_service bounded by --data_service_timeout_s.
        ``what``: the phase (a string, or a function returning it) the message names."""
        cfg = self.cfg
        if self._service_deadline is None:
            return next(iterator)
        self._service_deadline.arm(cfg.data_service_timeout_s, (
            f"while {what() if callable(what) else what}: no batch from the tf.data service "
            f"{cfg.data_service} within --data_service_timeout_s={cfg.data_service_timeout_s:g}. "
            "A worker holding part of this pass was probably lost: the dispatcher's log names "
            "it ('Lost worker HOST:PORT'); the clips it held are not delivered. Restart the "
            "worker (or check that workers are registered) and rerun: training resumes from the "
            "last checkpoint"))
        try:
            return next(iterator)
        finally:
            self._service_deadline.disarm()

    def _train_dataset(self, epoch: int, skip_steps: int):
        cfg, strategy = self.cfg, self.strategy
        seed = epoch_seed(cfg.seed, epoch)
        remaining = self.steps_per_epoch - skip_steps

        def dataset_fn(ctx: tf.distribute.InputContext):
            skip = skip_steps
            if self._train_dataset_fn is not None:
                ds = self._train_dataset_fn(ctx, seed, self.per_replica_batch)
            elif cfg.data_service:
                # The service's order is not reproducible: a resumed epoch trains its remaining
                # steps on a fresh pass (rnl_keras.data.service), nothing to skip.
                from rnl_keras.data.service import service_train_dataset
                ds = service_train_dataset(
                    data_config(cfg, "train", seed), ctx.get_per_replica_batch_size(
                        cfg.batch_size), cfg.data_service, f"rnl-train-{self._service_run}-e{epoch}",
                    self._service_probe_s())
                skip = 0
            else:
                from rnl_keras.data import make_train_dataset
                ds = make_train_dataset(data_config(cfg, "train", seed), cfg.batch_size,
                                        input_context=ctx, repeat=False)
            # Every global step takes one batch per local replica from this pipeline; the epoch
            # is one pass (at most steps_per_epoch steps), then end-of-pass marker batches.
            from rnl_keras.data import pad_end_of_pass
            per_step = max(ctx.num_replicas_in_sync // ctx.num_input_pipelines, 1)
            return pad_end_of_pass(ds.skip(skip * per_step).take(remaining * per_step))

        options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
        return strategy.distribute_datasets_from_function(dataset_fn, options)

    def _val_dataset(self):
        cfg = self.cfg
        workers = strat.num_workers(self.strategy)
        _, task_id = strat.task_info(self.strategy)
        ctx = tf.distribute.InputContext(num_input_pipelines=workers,
                                         input_pipeline_id=task_id if workers > 1 else 0,
                                         num_replicas_in_sync=workers)
        batch = cfg.val_batch_size or self.per_replica_batch
        if self._val_dataset_fn is not None:
            ds = self._val_dataset_fn(ctx, batch)
        elif cfg.data_service:   # every trainer joins the pass's job and reads its share
            from rnl_keras.data.service import service_eval_dataset
            self._val_passes = getattr(self, "_val_passes", 0) + 1
            ds = service_eval_dataset(data_config(cfg, "val"), batch, cfg.data_service,
                                      f"rnl-val-{self._service_run}-{self._val_passes}",
                                      self._service_probe_s())
        else:
            from rnl_keras.data import make_eval_dataset
            ds = make_eval_dataset(data_config(cfg, "val"), batch * workers, input_context=ctx)
        if cfg.val_max_videos:
            ds = ds.take(max(1, math.ceil(cfg.val_max_videos / (batch * workers))))
        return ds

    # ------------------------------------------------------------------------------ validate
    def validate(self) -> dict:
        """Single-view top-1 / top-5 / loss over the validation split (sharded over workers)."""
        sums = np.zeros(4, np.float64)   # correct1, correct5, loss_sum, count
        k5 = min(5, self.cfg.num_classes)
        for batch in self._from_service(self._val_dataset(), lambda: self.guard.where):
            self._stop_if_requested(local=True)
            clips, labels = batch["clip"], tf.cast(batch["label"], tf.int32)
            logits = tf.cast(self._eval_step(clips), tf.float32)
            top = tf.math.top_k(logits, k5).indices
            sums[0] += float(tf.reduce_sum(tf.cast(tf.equal(top[:, 0], labels), tf.float32)))
            sums[1] += float(tf.reduce_sum(tf.cast(tf.reduce_any(
                tf.equal(top, labels[:, None]), axis=1), tf.float32)))
            sums[2] += float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, logits)))
            sums[3] += int(labels.shape[0])
        with self.guard.phase(f"{self.guard.where}: summing validation over the workers",
                              collective=True):
            sums = self._sum_over_workers(sums)
        count = max(sums[3], 1.0)
        return {"top1": sums[0] / count, "top5": sums[1] / count, "loss": sums[2] / count,
                "num_videos": int(sums[3])}

    def _sum_over_workers(self, values: np.ndarray) -> np.ndarray:
        if strat.num_workers(self.strategy) <= 1:
            return values
        local = self.replicas // strat.num_workers(self.strategy)
        value = tf.constant(values, tf.float64)

        def fn(ctx):
            first = ctx.replica_id_in_sync_group % local == 0
            return value if first else tf.zeros_like(value)
        dist = self.strategy.experimental_distribute_values_from_function(fn)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, dist, axis=None).numpy()

    # ----------------------------------------------------------------------------- checkpoints
    def _save_checkpoint(self) -> str:
        step = int(self.optimizer.iterations.numpy())
        with self.guard.phase(f"{self.guard.where}: saving the checkpoint at global step {step}",
                              collective=True):
            path = self.manager.save(checkpoint_number=step)
        if not self.chief:
            shutil.rmtree(self.write_ckpt_dir, ignore_errors=True)
            os.makedirs(self.write_ckpt_dir, exist_ok=True)
            path = os.path.join(self.ckpt_dir, os.path.basename(path))   # the chief's copy
        return path

    def _stop_if_requested(self, total: float | None = None, local: bool = False) -> None:
        """Save a checkpoint and raise TrainingStopped when a stop was requested.

        Args:
          total: the stop codes summed over all workers (from the train step); None: ask
            the workers now (one small all-reduce) unless ``local``.
          local: decide from this process's request alone; only done with one worker (a
            multi-worker save is collective), otherwise ignored until the next step.
        """
        workers = strat.num_workers(self.strategy)
        if total is None:
            if local and workers > 1:
                return
            total = self.guard.code()
            if workers > 1:
                with self.guard.phase(f"{self.guard.where}: agreeing on a stop", collective=True):
                    total = float(self._sum_over_workers(np.array([total]))[0])
        signum = self.guard.signum(float(total))
        if signum is None:
            return
        raise self.guard.stopped(signum, self._save_checkpoint())

    def _restore(self) -> bool:
        latest = tf.train.latest_checkpoint(self.ckpt_dir)
        if not latest:
            return False
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        momentum = [v for v in self.optimizer.variables if "momentum" in v.path]
        norm = math.sqrt(sum(float(tf.reduce_sum(tf.square(v.value))) for v in momentum))
        self._print(f"Resumed from {latest}: epoch {int(self.counters.epoch.numpy())}, step "
                    f"{int(self.counters.step_in_epoch.numpy())} of the epoch, global step "
                    f"{int(self.optimizer.iterations.numpy())} (optimizer.iterations), momentum "
                    f"norm {norm:.6g}")
        self.resumed_momentum_norm = norm
        return True

    # ---------------------------------------------------------------------------------- run
    def _history_path(self) -> str:
        return os.path.join(self.cfg.model_dir, "history.json")

    def _load_history(self) -> list:
        try:
            with open(self._history_path(), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return []

    def _log_scalars(self, step: int, values: dict) -> None:
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def run(self) -> dict:
        cfg, c = self.cfg, self.counters
        from rnl_keras.data import BadSampleLog, report_bad_samples
        from rnl_keras.data.delivery import DeliveryLog
        run_start = time.time()
        # Leftovers of a killed run: .tmp_* files in model_dir, dead workers' temp directories.
        mdir.clean_stale(cfg.model_dir if self.chief else None)
        self.guard.begin("restoring the checkpoint", collective=True)
        resumed = self._restore()
        self.guard.end()
        self._start_service_run()
        # Records of the epochs the checkpoint completed (1-based "epoch" <= epochs done).
        history = [h for h in self._load_history()
                   if h.get("epoch", 0) <= int(c.epoch.numpy())] if resumed else []
        self.guard.training(True)   # from here a signal saves at the end of the step, then stops
        if self.chief and cfg.classes_file and os.path.isfile(cfg.classes_file):
            shutil.copyfile(cfg.classes_file, os.path.join(cfg.model_dir, "classes.txt"))
        if self.chief:
            write_json_atomic(os.path.join(cfg.model_dir, "config.json"), cfg.to_dict(),
                              sort_keys=True)
        self._print(
            f"Training {self.model.name}: {self.model.count_params():,} params, "
            f"strategy={cfg.strategy} ({self.replicas} replica(s), "
            f"{strat.num_workers(self.strategy)} worker(s)), global batch {cfg.batch_size} = "
            f"{self.micro_batch} x {cfg.grad_accum_steps} accumulation x {self.replicas} "
            f"replica(s), {self.steps_per_epoch} steps/epoch x {cfg.epochs} epochs, "
            f"peak lr {cfg.effective_lr():g} ({cfg.lr_schedule}), precision "
            f"{keras.mixed_precision.global_policy().name}")
        first_losses = []
        start_epoch = int(c.epoch.numpy())
        steps_this_run = 0
        train_time_run = 0.0
        for epoch in range(start_epoch, cfg.epochs):
            start_step = int(c.step_in_epoch.numpy()) if epoch == start_epoch else 0
            if start_step >= self.steps_per_epoch:
                start_step = self.steps_per_epoch
            bad_before = BadSampleLog.count()
            self._print(f"Epoch {epoch + 1}/{cfg.epochs}" +
                        (f" (resuming at step {start_step})" if start_step else ""))
            bar = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=[
                "loss", "top1", "lr", "clips/s"], verbose=1 if (self.chief and cfg.progress) else 0)
            if start_step:
                bar.update(start_step)
            DeliveryLog.reset()
            iterator = iter(self._train_dataset(epoch, start_step))
            ce_total, correct_total, seen = 0.0, 0.0, 0
            t_epoch = time.time()
            t_log, clips_log = time.time(), 0
            for step in range(start_step, self.steps_per_epoch):
                t0 = time.time()
                self.guard.begin(f"epoch {epoch + 1} step {step + 1} (global step "
                                 f"{int(self.optimizer.iterations.numpy()) + 1})", collective=True)
                clips, labels = self._next_batch(iterator, lambda: self.guard.where)
                if bool(self._end_of_pass(labels)):   # bad samples made the pass shorter
                    bar.update(step, finalize=True)
                    self._print(f"Epoch {epoch + 1}: the pass over the training list ended "
                                f"after {step} of {self.steps_per_epoch} steps")
                    break
                ce, correct, stops = self._train_step(
                    clips, labels, tf.constant(self.guard.code(), tf.float32))
                ce, correct = float(ce), float(correct)
                self.guard.end()
                dt = time.time() - t0
                steps_this_run += 1
                train_time_run += dt
                if not math.isfinite(ce):
                    raise FloatingPointError(f"loss is {ce} at epoch {epoch + 1} step {step + 1}")
                global_step = int(self.optimizer.iterations.numpy())
                ce_total, correct_total, seen = ce_total + ce, correct_total + correct, \
                    seen + cfg.batch_size
                if len(first_losses) < 100:
                    first_losses.append(ce / cfg.batch_size)
                c.step_in_epoch.assign(step + 1)
                c.train_seconds.assign_add(dt)
                c.clips_seen.assign_add(cfg.batch_size)
                clips_log += cfg.batch_size
                lr = float(self.schedule(global_step - 1))
                speed = cfg.batch_size / max(dt, 1e-9)
                bar.update(step + 1, [("loss", ce_total / seen), ("top1", correct_total / seen),
                                      ("lr", lr), ("clips/s", speed)])
                if global_step % cfg.log_every_steps == 0 or step + 1 == self.steps_per_epoch:
                    self._log_scalars(global_step, {
                        "train/loss": ce / cfg.batch_size, "train/top1": correct / cfg.batch_size,
                        "train/lr": lr,
                        "train/clips_per_sec": clips_log / max(time.time() - t_log, 1e-9)})
                    t_log, clips_log = time.time(), 0
                if (cfg.checkpoint_every_steps and global_step % cfg.checkpoint_every_steps == 0
                        and step + 1 < self.steps_per_epoch):
                    self._save_checkpoint()
                self._stop_if_requested(float(stops))
            self.guard.end()
            service_clips = (DeliveryLog.total(), len(DeliveryLog.counts()))
            epoch_time = time.time() - t_epoch
            record = {"epoch": epoch + 1, "global_step": int(self.optimizer.iterations.numpy()),
                      "epoch_seconds": round(epoch_time, 2)}
            if seen:
                record.update(train_loss=ce_total / seen, train_top1=correct_total / seen,
                              clips_per_sec=seen / max(epoch_time, 1e-9))
            last = epoch + 1 == cfg.epochs
            if cfg.val_list and ((epoch + 1) % cfg.val_every_epochs == 0 or last):
                self.guard.begin(f"epoch {epoch + 1} validation")
                t_val = time.time()
                val = self.validate()
                record.update(val_top1=val["top1"], val_top5=val["top5"], val_loss=val["loss"],
                              val_videos=val["num_videos"], val_seconds=round(time.time() - t_val, 2))
                self._log_scalars(record["global_step"], {
                    "val/top1": val["top1"], "val/top5": val["top5"], "val/loss": val["loss"]})
                if val["top1"] > float(c.best_top1.numpy()):
                    c.best_top1.assign(val["top1"])
                    c.best_epoch.assign(epoch + 1)
                    if self.chief:
                        write_atomic(os.path.join(cfg.model_dir, "best.keras"), self.model.save)
                self._print(f"Epoch {epoch + 1}: val top-1 {val['top1']:.4f} top-5 "
                            f"{val['top5']:.4f} loss {val['loss']:.4f} ({val['num_videos']} "
                            f"videos); best top-1 {float(c.best_top1.numpy()):.4f} (epoch "
                            f"{int(c.best_epoch.numpy())})")
            bad = BadSampleLog.count() - bad_before
            record["bad_samples"] = bad
            if cfg.data_service:   # counted in the train step's pipeline, before validation
                record["service_clips"], record["service_distinct_clips"] = service_clips
                self._print(f"Epoch {epoch + 1}: the tf.data service delivered "
                            f"{service_clips[0]} clip(s) to this trainer, {service_clips[1]} "
                            "distinct (bad samples it found: counted below)")
            self._print(f"Epoch {epoch + 1}: {bad} bad sample(s) skipped this epoch, "
                        f"{BadSampleLog.count()} in total")
            if bad:
                self._print(report_bad_samples(epoch + 1, since=bad_before))
            c.epoch.assign(epoch + 1)
            c.step_in_epoch.assign(0)
            history.append(record)
            if self.chief:
                write_json_atomic(self._history_path(), history, sort_keys=True)
                self.writer.flush()
            self.guard.begin(f"end of epoch {epoch + 1}")
            self._save_checkpoint()
            self._stop_if_requested()
        self.guard.training(False)
        self.guard.begin("writing final.keras and summary.json")
        return self._finish(history, run_start, steps_this_run, train_time_run, first_losses)

    def _finish(self, history, run_start, steps_this_run, train_time_run, first_losses) -> dict:
        cfg, c = self.cfg, self.counters
        digest = weights_digest(self.model)
        slots_digest = weights_digest(self.optimizer.variables)
        if self.chief:
            write_atomic(os.path.join(cfg.model_dir, "final.keras"), self.model.save)
        total_clips = int(c.clips_seen.numpy())
        train_seconds = float(c.train_seconds.numpy())
        summary = {
            "epochs": int(c.epoch.numpy()), "global_steps": int(self.optimizer.iterations.numpy()),
            "steps_per_epoch": self.steps_per_epoch, "global_batch_size": cfg.batch_size,
            "replicas": self.replicas, "workers": strat.num_workers(self.strategy),
            "best_val_top1": float(c.best_top1.numpy()) if cfg.val_list else None,
            "best_epoch": int(c.best_epoch.numpy()) if cfg.val_list else None,
            "final_val_top1": history[-1].get("val_top1") if history else None,
            "wall_seconds": round(time.time() - run_start, 2),
            "train_seconds_total": round(train_seconds, 2),
            "steps_this_run": steps_this_run,
            "clips_per_sec": round(total_clips / train_seconds, 3) if train_seconds else None,
            "first_losses": first_losses, "weights_sha256": digest,
            "optimizer_sha256": slots_digest,
            "model_dir": cfg.model_dir, "history": history,
            "recipe": cfg.recipe or None, "start": self.start_record,
            "param_groups": {"policy": cfg.param_groups, "groups": [
                dict(zip(("group", "lr_mult", "decay_mult", "variables", "parameters"), row))
                for row in self.group_rows]},
        }
        if self.chief:
            write_json_atomic(os.path.join(cfg.model_dir, "summary.json"), summary, sort_keys=True)
            self.writer.flush()
        best = summary["best_val_top1"]
        self._print(
            "\n".join([
                "=" * 72,
                f"Training finished: {summary['epochs']} epochs, {summary['global_steps']} steps "
                f"(global batch {cfg.batch_size}, {self.replicas} replica(s))",
                f"  best val top-1: {best:.4f} (epoch {summary['best_epoch']})" if best is not None
                and best >= 0 else "  no validation",
                f"  wall time this run: {summary['wall_seconds']:.1f} s; training time total "
                f"{train_seconds:.1f} s; {summary['clips_per_sec'] or 0:.2f} clips/s",
                (f"  models: {os.path.join(cfg.model_dir, 'best.keras')} (best), " if cfg.val_list
                 else "  model: ") + f"{os.path.join(cfg.model_dir, 'final.keras')} (final)",
                f"  summary: {os.path.join(cfg.model_dir, 'summary.json')}",
                "=" * 72]))
        # Every worker prints its digest (tests compare them across workers).
        print(f"weights_sha256={digest}", file=self.out, flush=True)
        print(f"optimizer_sha256={slots_digest}", file=self.out, flush=True)
        return summary
