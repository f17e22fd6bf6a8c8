"""The training loop: one short design for the default, mirrored and multi-worker strategies.

``model.fit`` fails under MultiWorkerMirroredStrategy with Keras 3 (keras-team/keras#20585), so
:class:`Trainer` runs the hooks of a :class:`~rnl_keras.training.task.VideoClassificationTask`
itself: each step is a ``tf.function`` running the task's ``train_step`` with ``strategy.run``
over a dataset distributed with ``strategy.distribute_datasets_from_function``; around the steps
the :mod:`~rnl_keras.training.callbacks` show progress, log TensorBoard scalars, save the best
model, report bad samples, write the history and save / restore checkpoints.

Resuming: the checkpoint holds the model, the optimizer and the loop's counters; each epoch's
input order is a pure function of (``--seed``, epoch), so a resumed epoch skips exactly the
batches already trained on. Files: only the chief writes ``model_dir`` (every file via a
temporary name and ``os.replace``); the other workers take part in the collective saves.
Stops: a signal is acted on after the current step (a checkpoint is saved, then
:class:`~rnl_keras.training.failures.TrainingStopped`), at the same step on every worker.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from rnl_keras.atomic_io import write_atomic, write_json_atomic
from rnl_keras.training import callbacks as cb, collectives, strategy as strat
from rnl_keras.training import model_dir as mdir
from rnl_keras.training.checkpointing import Checkpoints, TrainState
from rnl_keras.training.config import ConfigError, TrainConfig
from rnl_keras.training.guard import RunGuard
from rnl_keras.training.inputs import BatchReader, check_data, service_probe_s, service_run_id
from rnl_keras.training.summary import architecture, final_report, group_records, weights_digest
from rnl_keras.training.task import VideoClassificationTask

__all__ = ["Trainer"]


@dataclasses.dataclass
class _Tally:
    """What this run (not the checkpoint) did: steps, training seconds, the first losses."""

    steps: int = 0
    seconds: float = 0.0
    first_losses: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _EpochTotals:
    """Sums over the steps of one epoch run now."""

    ce: float = 0.0
    correct: float = 0.0
    seen: int = 0
    steps_done: int = 0


def steps_per_epoch(cfg: TrainConfig, num_train: int) -> int:
    """``--steps_per_epoch``, or the training samples // the global batch."""
    o = cfg.optim
    if o.steps_per_epoch:
        return o.steps_per_epoch
    if not num_train:
        raise ConfigError("steps_per_epoch", "is required when the number of training "
                          "samples is unknown (TFRecord shards)")
    if num_train // o.batch_size < 1:
        raise ConfigError("batch_size", f"{o.batch_size} is larger than the {num_train} "
                          "training samples")
    return num_train // o.batch_size


class Trainer:
    """Builds the strategy, the task's model and optimizer, the counters and callbacks; trains.

    Call :meth:`run` (returns the summary dict), then :meth:`close`. ``num_train`` (training
    samples) and ``train_dataset_fn`` / ``val_dataset_fn`` may be given to train on in-memory data
    (tests); by default the ``rnl_keras.data`` pipelines read ``--train_list`` / ``--val_list``.
    ``stop``: a :class:`rnl_keras.training.failures.StopSignals` (SIGINT / SIGTERM save a
    checkpoint, then :class:`~rnl_keras.training.failures.TrainingStopped`).
    """

    def __init__(self, cfg: TrainConfig, strategy=None, num_train: int | None = None,
                 train_dataset_fn=None, val_dataset_fn=None, out=None, stop=None):
        self.cfg, self.out = cfg, out or sys.stdout
        rt = cfg.runtime
        self.guard = RunGuard(stop, rt.peer_timeout_s, strat.peer_addresses()
                              if rt.strategy == "multi_worker" and strategy is None else ())
        self.num_train = num_train if num_train is not None else check_data(cfg)
        if cfg.data.data_service:   # nothing listening: a prompt, clear error before any work
            from rnl_keras.data.service_address import check_service_address
            check_service_address(cfg.data.data_service, service_probe_s(cfg))
        # Multi-worker: starting the cluster waits for every peer (bounded by make_strategy),
        # so does building the model (initial values are broadcast): --peer_timeout_s.
        self.guard.begin("starting the cluster")
        self.strategy = strategy or strat.make_strategy(rt.strategy, rt.cpu_devices,
                                                        rt.peer_timeout_s)
        self.guard.stop.install()   # after the strategy: TensorFlow replaces the SIGTERM handler
        self.guard.begin("building the model", collective=True)
        self.replicas = self.strategy.num_replicas_in_sync
        cfg.optim.check_replicas(self.replicas)
        self.chief = strat.is_chief(self.strategy)
        self.steps_per_epoch = steps_per_epoch(cfg, self.num_train)
        self.task = VideoClassificationTask(cfg, self.steps_per_epoch, self.replicas,
                                            train_dataset_fn, val_dataset_fn)
        self.reader = BatchReader(cfg.data.data_service, cfg.data.data_service_timeout_s)
        self.resumed = None
        self._build()
        self.guard.end()

    # ---------------------------------------------------------------------------- accessors
    @property
    def where(self) -> str:
        """What the trainer is doing now (named by error messages)."""
        return self.guard.where

    @property
    def model(self) -> keras.Model:
        return self.task.model

    @property
    def optimizer(self):
        return self.task.optimizer

    @property
    def param_groups(self) -> dict:
        return self.task.param_groups

    def close(self) -> None:
        """Flush TensorBoard and remove this process's private checkpoint directory."""
        try:
            self.writer.flush()
        finally:
            if not self.chief:
                mdir.remove_own_worker_dirs()

    def _print(self, msg: str) -> None:
        if self.chief:
            print(msg, file=self.out, flush=True)

    # -------------------------------------------------------------------------------- setup
    def _build(self) -> None:
        """Model, optimizer and counters (in the strategy's scope), checkpoints, the writer,
        the step functions and the callbacks."""
        cfg, rt = self.cfg, self.cfg.runtime
        cfg.check_files()
        if rt.mixed_precision == "bfloat16":
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        keras.utils.set_random_seed(rt.seed)
        with self.strategy.scope():
            model = self.task.build_model()
            self.task.build_optimizer(model)
            self._print(self.task.group_table())
            self.state = TrainState.create()
        self.checkpoints = Checkpoints(model, self.optimizer, self.state, rt.model_dir,
                                       self.strategy, rt.keep_checkpoints, self.guard)
        if self.chief:
            os.makedirs(rt.model_dir, exist_ok=True)
            write_json_atomic(os.path.join(rt.model_dir, "param_groups.json"), {
                path: [g.name, g.lr_mult, g.decay_mult] for path, g in self.param_groups.items()})
            self.writer = tf.summary.create_file_writer(os.path.join(rt.model_dir, "tb"))
        else:
            self.writer = tf.summary.create_noop_writer()
        self._gate = collectives.make_step_gate(self.strategy)
        self._train_step = collectives.make_train_step(self.strategy, self.task.train_step,
                                                       rt.jit_compile)
        self.callbacks = cb.CallbackList(self._make_callbacks())

    def _make_callbacks(self) -> list:
        rt, steps = self.cfg.runtime, self.steps_per_epoch
        self.history = cb.History(rt.model_dir, self.chief, self.writer.flush)
        return [
            cb.ProgressBar(steps, self.chief and rt.progress),
            cb.TensorBoardScalars(self.writer, rt.log_every_steps, steps, time.time),
            cb.BestModel(self.model, self.state, rt.model_dir, self.chief, self._print),
            cb.BadSampleReport(self._print),
            self.history,
            cb.CheckpointSaver(self.checkpoints, rt.checkpoint_every_steps, steps, self.guard,
                               self._on_restore),
        ]

    def _on_restore(self, restored: dict | None) -> None:
        """After the checkpoint was restored (or none was found): keep its epochs' history."""
        self.resumed = restored
        self.history.load(int(self.state.epoch.numpy()))
        if restored:
            self._print(f"Resumed from {restored['checkpoint']}: epoch {restored['epoch']}, step "
                        f"{restored['step_in_epoch']} of the epoch, global step "
                        f"{restored['global_step']} (optimizer.iterations), momentum norm "
                        f"{restored['momentum_norm']:.6g}")

    # ---------------------------------------------------------------------------------- run
    def run(self) -> dict:
        """Train from the latest checkpoint (if any) to ``--epochs``; returns the summary."""
        run_start = time.time()
        self._begin()
        tally = _Tally()
        for epoch in range(int(self.state.epoch.numpy()), self.cfg.optim.epochs):
            self._run_epoch(epoch, tally)
        self.guard.training(False)
        self.guard.begin("writing final.keras and summary.json")
        return self._finish(run_start, tally)

    def _begin(self) -> None:
        """Leftovers cleaned, checkpoint restored, service jobs named, run files written."""
        cfg = self.cfg
        # Leftovers of a killed run: .tmp_* files in model_dir, dead workers' temp directories.
        mdir.clean_stale(cfg.runtime.model_dir if self.chief else None)
        self.callbacks.on_train_begin()   # restores the checkpoint
        if cfg.data.data_service:
            self.reader.start()
            self.task.inputs.service_run = service_run_id(
                lambda v: self._agree(v, "agreeing on the tf.data service job name"))
        self.guard.training(True)   # from here a signal saves at the end of the step, then stops
        self._write_run_files()
        o = cfg.optim
        self._print(
            f"Training {architecture(cfg.model_kwargs())} ({self.model.name}): "
            f"{self.model.count_params():,} params, "
            f"strategy={cfg.runtime.strategy} ({self.replicas} replica(s), "
            f"{strat.num_workers(self.strategy)} worker(s)), global batch {o.batch_size} = "
            f"{self.task.per_replica_batch // o.grad_accum_steps} x {o.grad_accum_steps} "
            f"accumulation x {self.replicas} replica(s), {self.steps_per_epoch} steps/epoch x "
            f"{o.epochs} epochs, peak lr {o.effective_lr():g} ({o.lr_schedule}), precision "
            f"{keras.mixed_precision.global_policy().name}")

    def _write_run_files(self) -> None:
        """The chief's ``classes.txt`` (a copy of --classes_file) and ``config.json``."""
        if not self.chief:
            return
        cfg, model_dir = self.cfg, self.cfg.runtime.model_dir
        if cfg.data.classes_file and os.path.isfile(cfg.data.classes_file):
            write_atomic(os.path.join(model_dir, "classes.txt"),
                         lambda tmp: shutil.copyfile(cfg.data.classes_file, tmp))
        write_json_atomic(os.path.join(model_dir, "config.json"), cfg.to_dict(), sort_keys=True)

    def _run_epoch(self, epoch: int, tally: _Tally) -> None:
        """Train one epoch (from the checkpoint's step when resuming), validate, end it."""
        cfg, s = self.cfg, self.state
        start_step = min(int(s.step_in_epoch.numpy()), self.steps_per_epoch)
        self._print(f"Epoch {epoch + 1}/{cfg.optim.epochs}" +
                    (f" (resuming at step {start_step})" if start_step else ""))
        self.callbacks.on_epoch_begin(epoch, start_step)
        from rnl_keras.data.delivery import DeliveryLog
        DeliveryLog.reset()
        iterator = iter(self.strategy.distribute_datasets_from_function(
            lambda ctx: self.task.build_inputs(ctx, True, epoch, start_step),
            tf.distribute.InputOptions(experimental_fetch_to_device=True)))
        t_epoch = time.time()
        totals = _EpochTotals(steps_done=start_step)
        for step in range(start_step, self.steps_per_epoch):
            if not self._step(epoch, step, iterator, totals, tally):
                self.callbacks.on_pass_end(epoch, step)
                self._print(f"Epoch {epoch + 1}: the pass over the training list ended "
                            f"after {step} of {self.steps_per_epoch} steps")
                break
        self.guard.end()
        record = self._epoch_record(epoch, totals, time.time() - t_epoch,
                                    (DeliveryLog.total(), len(DeliveryLog.counts())))
        self._maybe_validate(epoch, record)
        s.epoch.assign(epoch + 1)
        s.step_in_epoch.assign(0)
        self.callbacks.on_epoch_end(epoch, record)
        self._stop_if_requested()

    def _step(self, epoch: int, step: int, iterator, totals: _EpochTotals,
              tally: _Tally) -> bool:
        """One training step; False (nothing trained) when the epoch's pass has ended."""
        o, s = self.cfg.optim, self.state
        t0 = time.time()
        self.guard.begin(f"epoch {epoch + 1} step {step + 1} (global step "
                         f"{int(self.optimizer.iterations.numpy()) + 1})", collective=True)
        clips, labels = self.reader.next(iterator, lambda: self.guard.where)
        # One small all-reduce: any replica's pass over, any worker asked to stop.
        ended, stops = (float(v) for v in self._gate(
            labels, tf.constant(self.guard.code(), tf.float32)).numpy())
        if ended > 0:
            return False
        ce, correct = (float(v) for v in self._train_step(clips, labels).numpy())
        self.guard.end()
        dt = time.time() - t0
        tally.steps, tally.seconds = tally.steps + 1, tally.seconds + dt
        if not math.isfinite(ce):
            raise FloatingPointError(f"loss is {ce} at epoch {epoch + 1} step {step + 1}")
        global_step = int(self.optimizer.iterations.numpy())
        totals.ce, totals.correct = totals.ce + ce, totals.correct + correct
        totals.seen, totals.steps_done = totals.seen + o.batch_size, step + 1
        if len(tally.first_losses) < 100:
            tally.first_losses.append(ce / o.batch_size)
        s.step_in_epoch.assign(step + 1)
        s.train_seconds.assign_add(dt)
        s.clips_seen.assign_add(o.batch_size)
        self.callbacks.on_step_end(cb.StepLogs(
            epoch=epoch, step=step, global_step=global_step, loss=ce / o.batch_size,
            top1=correct / o.batch_size, epoch_loss=totals.ce / totals.seen,
            epoch_top1=totals.correct / totals.seen,
            lr=float(self.task.schedule(global_step - 1)), seconds=dt, batch_size=o.batch_size))
        self._stop_if_requested(stops)
        return True

    def _epoch_record(self, epoch: int, totals: _EpochTotals, seconds: float,
                      delivered: tuple) -> dict:
        """The epoch's history entry before validation (callbacks add to it)."""
        record = {"epoch": epoch + 1, "global_step": int(self.optimizer.iterations.numpy()),
                  "epoch_seconds": round(seconds, 2), "epoch_steps": totals.steps_done}
        if totals.seen:
            record.update(train_loss=totals.ce / totals.seen,
                          train_top1=totals.correct / totals.seen,
                          clips_per_sec=totals.seen / max(seconds, 1e-9))
        if self.cfg.data.data_service:   # counted in the training pipeline, before validation
            record["service_clips"], record["service_distinct_clips"] = delivered
        return record

    # ----------------------------------------------------------------------------- validate
    def _maybe_validate(self, epoch: int, record: dict) -> None:
        """Validate every --val_every_epochs epochs and after the last; adds val_* to record."""
        cfg = self.cfg
        last = epoch + 1 == cfg.optim.epochs
        if not cfg.data.val_list or ((epoch + 1) % cfg.runtime.val_every_epochs and not last):
            return
        self.guard.begin(f"epoch {epoch + 1} validation")
        t_val = time.time()
        val = self.validate()
        record.update(val_top1=val["top1"], val_top5=val["top5"], val_loss=val["loss"],
                      val_videos=val["num_videos"], val_seconds=round(time.time() - t_val, 2))

    def validate(self) -> dict:
        """Single-view top-1 / top-5 / loss over the validation split (sharded over workers)."""
        workers = strat.num_workers(self.strategy)
        _, task_id = strat.task_info(self.strategy)
        ctx = tf.distribute.InputContext(num_input_pipelines=workers,
                                         input_pipeline_id=task_id if workers > 1 else 0,
                                         num_replicas_in_sync=workers)
        batch = self.cfg.data.val_batch_size or self.task.per_replica_batch
        dataset = self.task.build_inputs(ctx, False, batch=batch, workers=workers)
        sums = np.zeros(4, np.float64)   # correct1, correct5, loss_sum, count
        for element in self.reader.iterate(dataset, lambda: self.guard.where):
            self._stop_if_requested(local=True)
            sums += self.task.validation_step(element["clip"], element["label"])
        sums = self._agree(sums, f"{self.guard.where}: summing validation over the workers")
        count = max(sums[3], 1.0)
        return {"top1": sums[0] / count, "top5": sums[1] / count, "loss": sums[2] / count,
                "num_videos": int(sums[3])}

    # ------------------------------------------------------------------------ agreement, stops
    def _agree(self, values: np.ndarray, what: str) -> np.ndarray:
        """``values`` summed over the workers (a bounded collective phase when there are
        several)."""
        if strat.num_workers(self.strategy) <= 1:
            return values
        with self.guard.phase(what, collective=True):
            return collectives.sum_over_workers(self.strategy, values)

    def _stop_if_requested(self, total: float | None = None, local: bool = False) -> None:
        """Save a checkpoint and raise TrainingStopped when a stop was requested.

        Args:
          total: the stop codes summed over all workers (from the step gate); None: ask
            the workers now (one small all-reduce) unless ``local``.
          local: decide from this process's request alone; only done with one worker (a
            multi-worker save is collective), otherwise ignored until the next step.
        """
        if total is None:
            if local and strat.num_workers(self.strategy) > 1:
                return
            total = float(self._agree(np.array([self.guard.code()]),
                                      f"{self.guard.where}: agreeing on a stop")[0])
        signum = self.guard.signum(float(total))
        if signum is None:
            return
        raise self.guard.stopped(signum, self.checkpoints.save())

    # ------------------------------------------------------------------------------- finish
    def _finish(self, run_start: float, tally: _Tally) -> dict:
        """final.keras, summary.json and the closing report; returns the summary."""
        rt = self.cfg.runtime
        digest = weights_digest(self.model)
        slots_digest = weights_digest(self.optimizer.variables)
        with self.guard.phase("comparing the workers' final weights", collective=True) \
                if strat.num_workers(self.strategy) > 1 else contextlib.nullcontext():
            workers = [collectives.gather_hex_over_workers(self.strategy, d)
                       for d in (digest, slots_digest)]
        if self.chief:
            write_atomic(os.path.join(rt.model_dir, "final.keras"), self.model.save)
        summary = self._summary(run_start, tally, digest, slots_digest)
        summary["workers_weights_sha256"], summary["workers_optimizer_sha256"] = workers
        if self.chief:
            write_json_atomic(os.path.join(rt.model_dir, "summary.json"), summary,
                              sort_keys=True)
            self.writer.flush()
        self._print(final_report(summary, rt.model_dir, bool(self.cfg.data.val_list)))
        # Every worker prints its digests (the chief's summary.json holds them all).
        print(f"weights_sha256={digest}", file=self.out, flush=True)
        print(f"optimizer_sha256={slots_digest}", file=self.out, flush=True)
        self.callbacks.on_train_end(summary)
        return summary

    def _summary(self, run_start: float, tally: _Tally, digest: str, slots_digest: str) -> dict:
        """The summary.json dict (see :mod:`rnl_keras.training.summary`)."""
        cfg, s, records = self.cfg, self.state, self.history.records
        has_val = bool(cfg.data.val_list)
        clips, seconds = int(s.clips_seen.numpy()), float(s.train_seconds.numpy())
        return {
            "epochs": int(s.epoch.numpy()), "global_steps": int(self.optimizer.iterations.numpy()),
            "steps_per_epoch": self.steps_per_epoch, "global_batch_size": cfg.optim.batch_size,
            "replicas": self.replicas, "workers": strat.num_workers(self.strategy),
            "best_val_top1": float(s.best_top1.numpy()) if has_val else None,
            "best_epoch": int(s.best_epoch.numpy()) if has_val else None,
            "final_val_top1": records[-1].get("val_top1") if records else None,
            "wall_seconds": round(time.time() - run_start, 2),
            "train_seconds_total": round(seconds, 2), "steps_this_run": tally.steps,
            "clips_per_sec": round(clips / seconds, 3) if seconds else None,
            "first_losses": tally.first_losses, "weights_sha256": digest,
            "optimizer_sha256": slots_digest, "model_dir": cfg.runtime.model_dir,
            "history": records, "recipe": cfg.model.recipe or None, "start": self.task.start_record,
            "param_groups": {"policy": cfg.optim.param_groups,
                             "groups": group_records(self.task.group_rows)},
            "architecture": architecture(cfg.model_kwargs()), "resumed": self.resumed,
        }
