"""What happens around the training loop's steps and epochs, as small callback objects.

The loop (:mod:`rnl_keras.training.loop`) calls, in list order, ``on_train_begin()``,
``on_epoch_begin(epoch, start_step)``, ``on_step_end(logs)`` after each step,
``on_pass_end(epoch, steps_done)`` when a pass ends early, ``on_epoch_end(epoch, record)``
after training (and validating) an epoch and ``on_train_end(summary)``. Epochs are 0-based
here; ``record`` is the epoch's ``history.json`` entry (its "epoch" is 1-based) and callbacks
may add to it. The callbacks: the progress bar, TensorBoard scalars, bad-sample (and tf.data
service) reports, best-model saving, the history file and the checkpoints (restore at the start,
save every N steps and at every epoch end). Only the chief writes files; every worker takes part
in the (collective) checkpoint saves.
"""
from __future__ import annotations

import dataclasses
import json
import os

from rnl_keras.atomic_io import write_atomic, write_json_atomic


@dataclasses.dataclass
class StepLogs:
    """One training step: where it was, and its (global-batch) results."""

    epoch: int            # 0-based
    step: int             # 0-based step inside the epoch
    global_step: int      # optimizer iterations after the step
    loss: float           # mean cross-entropy of the step's global batch
    top1: float
    epoch_loss: float     # means over the epoch's steps so far (this run)
    epoch_top1: float
    lr: float
    seconds: float
    batch_size: int


class Callback:
    """The protocol: every hook does nothing unless overridden."""

    def on_train_begin(self) -> None:
        """Before the first epoch of this run."""

    def on_epoch_begin(self, epoch: int, start_step: int) -> None:
        """Before the first step of ``epoch`` (``start_step`` > 0 when resuming inside it)."""

    def on_step_end(self, logs: StepLogs) -> None:
        """After each training step."""

    def on_pass_end(self, epoch: int, steps_done: int) -> None:
        """The pass over the training list ended after ``steps_done`` < steps_per_epoch steps
        (bad samples made it shorter); ``on_epoch_end`` follows."""

    def on_epoch_end(self, epoch: int, record: dict) -> None:
        """After the epoch's steps and validation; ``record`` may be extended."""

    def on_train_end(self, summary: dict) -> None:
        """After the last epoch (``summary``: what summary.json holds)."""


class CallbackList(Callback):
    """Calls each hook of every callback, in order."""

    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def on_train_begin(self):
        for c in self.callbacks:
            c.on_train_begin()

    def on_epoch_begin(self, epoch, start_step):
        for c in self.callbacks:
            c.on_epoch_begin(epoch, start_step)

    def on_step_end(self, logs):
        for c in self.callbacks:
            c.on_step_end(logs)

    def on_pass_end(self, epoch, steps_done):
        for c in self.callbacks:
            c.on_pass_end(epoch, steps_done)

    def on_epoch_end(self, epoch, record):
        for c in self.callbacks:
            c.on_epoch_end(epoch, record)

    def on_train_end(self, summary):
        for c in self.callbacks:
            c.on_train_end(summary)


class ProgressBar(Callback):
    """A Keras progress bar per epoch (loss, top-1, lr, clips/s), shown when ``verbose``."""

    def __init__(self, steps_per_epoch: int, verbose: bool):
        self.steps, self.verbose = steps_per_epoch, verbose
        self.bar = None

    def on_epoch_begin(self, epoch, start_step):
        import keras
        self.bar = keras.utils.Progbar(self.steps, stateful_metrics=[
            "loss", "top1", "lr", "clips/s"], verbose=1 if self.verbose else 0)
        if start_step:
            self.bar.update(start_step)

    def on_step_end(self, logs):
        self.bar.update(logs.step + 1, [
            ("loss", logs.epoch_loss), ("top1", logs.epoch_top1), ("lr", logs.lr),
            ("clips/s", logs.batch_size / max(logs.seconds, 1e-9))])

    def on_pass_end(self, epoch, steps_done):
        self.bar.update(steps_done, finalize=True)


class TensorBoardScalars(Callback):
    """``<model_dir>/tb``: train/* every ``every`` global steps (and at each epoch's last step),
    val/* after each validation. ``writer``: a ``tf.summary`` writer (a no-op one off the
    chief)."""

    def __init__(self, writer, every: int, steps_per_epoch: int, clock):
        self.writer, self.every, self.steps = writer, every, steps_per_epoch
        self.clock = clock
        self._t_log, self._clips = clock(), 0

    def log(self, step: int, values: dict) -> None:
        import tensorflow as tf
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def on_step_end(self, logs):
        self._clips += logs.batch_size
        if logs.global_step % self.every and logs.step + 1 != self.steps:
            return
        self.log(logs.global_step, {
            "train/loss": logs.loss, "train/top1": logs.top1, "train/lr": logs.lr,
            "train/clips_per_sec": self._clips / max(self.clock() - self._t_log, 1e-9)})
        self._t_log, self._clips = self.clock(), 0

    def on_epoch_begin(self, epoch, start_step):
        self._t_log, self._clips = self.clock(), 0

    def on_epoch_end(self, epoch, record):
        if "val_top1" in record:
            self.log(record["global_step"], {"val/top1": record["val_top1"],
                                             "val/top5": record["val_top5"],
                                             "val/loss": record["val_loss"]})


class BestModel(Callback):
    """``best.keras`` (chief) and the best-top-1 counters whenever validation improves."""

    def __init__(self, model, state, model_dir: str, chief: bool, say):
        self.model, self.state, self.chief, self.say = model, state, chief, say
        self.path = os.path.join(model_dir, "best.keras")

    def on_epoch_end(self, epoch, record):
        if "val_top1" not in record:
            return
        s = self.state
        if record["val_top1"] > float(s.best_top1.numpy()):
            s.best_top1.assign(record["val_top1"])
            s.best_epoch.assign(epoch + 1)
            if self.chief:
                write_atomic(self.path, self.model.save)
        self.say(f"Epoch {epoch + 1}: val top-1 {record['val_top1']:.4f} top-5 "
                 f"{record['val_top5']:.4f} loss {record['val_loss']:.4f} "
                 f"({record['val_videos']} videos); best top-1 {float(s.best_top1.numpy()):.4f} "
                 f"(epoch {int(s.best_epoch.numpy())})")


class BadSampleReport(Callback):
    """Counts (and reports) the clips skipped as bad in each epoch, and what the tf.data service
    delivered (``record["service_clips"]``, set by the loop before validation)."""

    def __init__(self, say):
        self.say = say
        self._before = 0

    def on_epoch_begin(self, epoch, start_step):
        from rnl_keras.data import BadSampleLog
        self._before = BadSampleLog.count()

    def on_epoch_end(self, epoch, record):
        from rnl_keras.data import BadSampleLog, report_bad_samples
        bad = BadSampleLog.count() - self._before
        record["bad_samples"] = bad
        if "service_clips" in record:
            self.say(f"Epoch {epoch + 1}: the tf.data service delivered "
                     f"{record['service_clips']} clip(s) to this trainer, "
                     f"{record['service_distinct_clips']} distinct (bad samples it found: "
                     "counted below)")
        self.say(f"Epoch {epoch + 1}: {bad} bad sample(s) skipped this epoch, "
                 f"{BadSampleLog.count()} in total")
        if bad:
            self.say(report_bad_samples(epoch + 1, since=self._before))


class History(Callback):
    """``history.json``: one record per epoch; a resumed run keeps the records of the epochs its
    checkpoint completed (call :meth:`load` after restoring)."""

    def __init__(self, model_dir: str, chief: bool, flush):
        self.path = os.path.join(model_dir, "history.json")
        self.chief, self.flush = chief, flush
        self.records = []

    def load(self, epochs_done: int) -> None:
        """Keep the file's records of epochs 1..``epochs_done`` (none for a new run)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                records = json.load(f)
        except (OSError, ValueError):
            records = []
        self.records = [h for h in records if h.get("epoch", 0) <= epochs_done]

    def on_epoch_end(self, epoch, record):
        self.records.append(record)
        if self.chief:
            write_json_atomic(self.path, self.records, sort_keys=True)
            self.flush()


class CheckpointSaver(Callback):
    """Restores the latest checkpoint at the start, saves one every ``every`` global steps
    (0: never inside an epoch) and one at every epoch end (after the history is written, so a
    resumed run finds every record its checkpoint counts).

    Args:
      checkpoints: a :class:`rnl_keras.training.checkpointing.Checkpoints`.
      guard: the RunGuard (the phase the epoch-end save is named by).
      on_restore: called with :meth:`Checkpoints.restore`'s dict (None: nothing to resume).
    """

    def __init__(self, checkpoints, every: int, steps_per_epoch: int, guard, on_restore):
        self.checkpoints, self.every, self.steps = checkpoints, every, steps_per_epoch
        self.guard, self.on_restore = guard, on_restore

    def on_train_begin(self):
        self.guard.begin("restoring the checkpoint", collective=True)
        restored = self.checkpoints.restore()
        self.guard.end()
        self.on_restore(restored)

    def on_step_end(self, logs):
        if (self.every and logs.global_step % self.every == 0
                and logs.step + 1 < self.steps):
            self.checkpoints.save()

    def on_epoch_end(self, epoch, record):
        self.guard.begin(f"end of epoch {epoch + 1}")
        self.checkpoints.save()
