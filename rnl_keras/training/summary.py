"""The result of a training run: ``summary.json`` and the closing report.

``summary.json`` (written by the chief, atomically) is what programs and tests read: epochs and
steps, the best and final validation top-1, timings, the first losses, the sha256 digests of the
trainable weights and of the optimizer's variables (also every worker's, gathered at the end), the
start (ImageNet file and digest, or random), the parameter groups, the network's name and, for a
resumed run, where it resumed from.
"""
from __future__ import annotations

import hashlib
import os

import keras
import numpy as np


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


def architecture(model_kwargs: dict) -> str:
    """The network's name, e.g. ``"TSM-ResNet50 +5 RNL"`` or ``"TSM-ResNet (blocks 1-1-1-1,
    width 24) +2 RNL"`` (:func:`rnl_keras.models.spec.architecture_name`)."""
    from rnl_keras.models.spec import architecture_name
    return architecture_name(**model_kwargs)


def group_records(group_rows) -> list[dict]:
    """The parameter-group table's rows as summary.json records."""
    keys = ("group", "lr_mult", "decay_mult", "variables", "parameters")
    return [dict(zip(keys, row)) for row in group_rows]


def final_report(summary: dict, model_dir: str, has_val: bool) -> str:
    """The block printed at the end of a run (where the models and the summary are)."""
    best = summary["best_val_top1"]
    return "\n".join([
        "=" * 72,
        f"Training finished: {summary['epochs']} epochs, {summary['global_steps']} steps "
        f"(global batch {summary['global_batch_size']}, {summary['replicas']} replica(s))",
        f"  best val top-1: {best:.4f} (epoch {summary['best_epoch']})" if best is not None
        and best >= 0 else "  no validation",
        f"  wall time this run: {summary['wall_seconds']:.1f} s; training time total "
        f"{summary['train_seconds_total']:.1f} s; {summary['clips_per_sec'] or 0:.2f} clips/s",
        (f"  models: {os.path.join(model_dir, 'best.keras')} (best), " if has_val
         else "  model: ") + f"{os.path.join(model_dir, 'final.keras')} (final)",
        f"  summary: {os.path.join(model_dir, 'summary.json')}",
        "=" * 72])
