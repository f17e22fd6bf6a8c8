"""Cross-replica and cross-worker reductions of the training loop, as few as possible per step.

Per training step the loop runs two small all-reduces besides the gradients': :func:`make_step_gate`
(before the step: "has any replica's pass ended?" and "has any worker been asked to stop?", one
reduction of a 2-vector) and the metrics of :func:`make_train_step` (cross-entropy sum and
correct count, one reduction of a 2-vector). :func:`sum_over_workers` and
:func:`gather_over_workers` serve the rarer host-side agreements (a stop outside the step,
validation sums, the service job name, the workers' final digests).

The gradients themselves are all-reduced by the optimizer; with ``--clip_grad_norm`` (default 20)
and more than one replica the task all-reduces them once more before the optimizer does
(:meth:`~rnl_keras.training.task.VideoClassificationTask._clip`: the norm must be that of the
whole batch's gradient), so such steps carry the gradients twice. Not mended: Keras 3's optimizer
has no switch to skip its own aggregation.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from rnl_keras.training import strategy as strat


def make_step_gate(strategy):
    """tf.function ``gate(labels, stop) -> (2,) float32``: [ended, stops] summed over replicas.

    ``ended > 0``: some replica (on some worker) got an end-of-pass marker batch
    (``rnl_keras.data.pad_end_of_pass``), so every worker ends the epoch at the same step.
    ``stops``: the stop codes (:meth:`rnl_keras.training.guard.RunGuard.code`) summed, so every
    worker stops after the same step.
    """
    from rnl_keras.data import is_end_of_pass

    def replica_flags(labels, stop):
        return tf.stack([tf.cast(is_end_of_pass(labels), tf.float32), stop])

    @tf.function
    def gate(labels, stop):
        flags = strategy.run(replica_flags, args=(labels, stop))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None)
    return gate


def make_train_step(strategy, replica_step, jit_compile: bool = False):
    """tf.function ``step(clips, labels) -> (2,)``: ``replica_step`` on every replica, its
    [cross-entropy sum, correct count] summed over all replicas (one reduction)."""
    @tf.function(jit_compile=jit_compile)
    def train_step(clips, labels):
        sums = strategy.run(replica_step, args=(clips, labels))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)
    return train_step


def _per_worker(strategy, fn):
    """Sum over workers of ``fn(rank)`` (float64 array), taken once per worker (its first local
    replica; the others give zeros)."""
    workers = strat.num_workers(strategy)
    local = strategy.num_replicas_in_sync // workers

    def value(ctx):
        rank, index = divmod(ctx.replica_id_in_sync_group, local)
        out = fn(rank)
        return tf.constant(out if index == 0 else np.zeros_like(out), tf.float64)
    dist = strategy.experimental_distribute_values_from_function(value)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, dist, axis=None).numpy()


def sum_over_workers(strategy, values: np.ndarray) -> np.ndarray:
    """``values`` (float64) summed over the workers; the identity with one worker."""
    if strat.num_workers(strategy) <= 1:
        return values
    return _per_worker(strategy, lambda rank: np.asarray(values, np.float64))


def gather_over_workers(strategy, row: np.ndarray) -> np.ndarray:
    """(workers, n): row r is worker r's ``row`` (float64, exact for small integers)."""
    workers = strat.num_workers(strategy)
    row = np.asarray(row, np.float64)
    if workers <= 1:
        return row[None]

    def placed(rank):
        out = np.zeros((workers,) + row.shape, np.float64)
        out[rank] = row
        return out
    return _per_worker(strategy, placed)


def gather_hex_over_workers(strategy, digest: str) -> list[str]:
    """Every worker's hex ``digest`` (e.g. a sha256), in worker order."""
    rows = gather_over_workers(strategy, np.frombuffer(bytes.fromhex(digest), np.uint8))
    return [bytes(int(b) for b in row).hex() for row in rows]
