"""Checkpoints of a training run: the loop's counters, saving / restoring ``<model_dir>/ckpt``.

A checkpoint (``tf.train.Checkpoint``) holds the model, the optimizer (iterations, momentum) and
the :class:`TrainState` counters (the epoch, the step inside the epoch, the best validation top-1
and the training time so far), so a run killed at any point resumes where its last checkpoint
was saved. :func:`read_counters` reads them from a file without building a model (tools, tests).
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil

import tensorflow as tf


def make_manager(checkpoint: tf.train.Checkpoint, directory: str, keep: int):
    """A CheckpointManager; its files are written first and the ``checkpoint`` index last (via a
    temporary file and rename), so a ``kill -9`` never leaves an index pointing at half a save."""
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep,
                                      checkpoint_name="ckpt")


def latest(directory: str) -> str | None:
    """The newest checkpoint in ``directory`` (None: none)."""
    return tf.train.latest_checkpoint(directory)


def read_counters(path: str) -> dict:
    """Counters stored in a checkpoint (epoch, step_in_epoch, optimizer iterations...), for tools
    and tests; reads the file without building a model."""
    reader = tf.train.load_checkpoint(path)
    out = {}
    for key in reader.get_variable_to_shape_map():
        name = key.split("/")[0]
        if key.endswith("/.ATTRIBUTES/VARIABLE_VALUE") and key.count("/") == 2 and \
                not key.startswith(("model/", "optimizer/")):
            out[name] = reader.get_tensor(key).item()
        elif key == "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE":
            out["optimizer_iterations"] = reader.get_tensor(key).item()
    return out


COUNTERS = ("epoch", "step_in_epoch", "best_top1", "best_epoch", "train_seconds", "clips_seen")


@dataclasses.dataclass
class TrainState:
    """The loop's counters (tf.Variables saved in every checkpoint next to the model and the
    optimizer, under these names): epochs done, steps done in the current epoch, best
    validation top-1 and its epoch, training seconds and clips so far."""

    epoch: tf.Variable
    step_in_epoch: tf.Variable
    best_top1: tf.Variable
    best_epoch: tf.Variable
    train_seconds: tf.Variable
    clips_seen: tf.Variable

    @classmethod
    def create(cls) -> "TrainState":
        """New counters; call inside the strategy's scope (one value, kept by the first
        replica)."""
        def counter(dtype, value=0):
            return tf.Variable(value, dtype=dtype, trainable=False,
                               synchronization=tf.VariableSynchronization.ON_WRITE,
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        return cls(epoch=counter(tf.int64), step_in_epoch=counter(tf.int64),
                   best_top1=counter(tf.float64, -1.0), best_epoch=counter(tf.int64, -1),
                   train_seconds=counter(tf.float64), clips_seen=counter(tf.int64))

    def variables(self) -> dict:
        return {name: getattr(self, name) for name in COUNTERS}


class Checkpoints:
    """Saving and restoring ``<model_dir>/ckpt`` (the model, the optimizer, the counters).

    Saving is collective under multi-worker training: every worker calls :meth:`save`; only the
    chief writes ``model_dir``, the others a private directory emptied after each save.

    Args:
      model, optimizer, state: what a checkpoint holds (:class:`TrainState`).
      model_dir: the run's directory; strategy: the distribution strategy.
      keep: checkpoints kept (``--keep_checkpoints``).
      guard: the :class:`~rnl_keras.training.guard.RunGuard` (saves wait for the peers).
    """

    def __init__(self, model, optimizer, state: TrainState, model_dir: str, strategy, keep: int,
                 guard):
        from rnl_keras.training import strategy as strat
        self.optimizer, self.guard = optimizer, guard
        self.chief = strat.is_chief(strategy)
        self.directory = os.path.join(model_dir, "ckpt")
        self.write_directory = strat.write_dir(model_dir, strategy, "ckpt")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                              **state.variables())
        self.manager = make_manager(self.checkpoint, self.write_directory, keep)

    def save(self) -> str:
        """Save at the optimizer's global step; returns the (chief's) checkpoint path."""
        step = int(self.optimizer.iterations.numpy())
        with self.guard.phase(f"{self.guard.where}: saving the checkpoint at global step {step}",
                              collective=True):
            path = self.manager.save(checkpoint_number=step)
        if not self.chief:
            shutil.rmtree(self.write_directory, ignore_errors=True)
            os.makedirs(self.write_directory, exist_ok=True)
            path = os.path.join(self.directory, os.path.basename(path))   # the chief's copy
        return path

    def restore(self) -> dict | None:
        """Restore the latest checkpoint of ``model_dir``, if any.

        Returns:
          None (nothing to resume), or {"checkpoint", "epoch", "step_in_epoch", "global_step",
          "momentum_norm"} (the optimizer's momentum norm shows the slots came back too).
        """
        path = latest(self.directory)
        if not path:
            return None
        self.checkpoint.restore(path).assert_existing_objects_matched()
        momentum = [v for v in self.optimizer.variables if "momentum" in v.path]
        norm = math.sqrt(sum(float(tf.reduce_sum(tf.square(v.value))) for v in momentum))
        values = self.checkpoint
        return {"checkpoint": path, "epoch": int(values.epoch.numpy()),
                "step_in_epoch": int(values.step_in_epoch.numpy()),
                "global_step": int(self.optimizer.iterations.numpy()), "momentum_norm": norm}
