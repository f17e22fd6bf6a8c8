"""Checkpoint helpers: the manager of ``<model_dir>/ckpt`` and reading a checkpoint's counters."""
from __future__ import annotations

import tensorflow as tf


def make_manager(checkpoint: tf.train.Checkpoint, directory: str, keep: int):
    """A CheckpointManager; its files are written first and the ``checkpoint`` index last (via a
    temporary file and rename), so a ``kill -9`` never leaves an index pointing at half a save."""
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep,
                                      checkpoint_name="ckpt")


def latest(directory: str) -> str | None:
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
