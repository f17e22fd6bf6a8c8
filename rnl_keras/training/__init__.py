"""Training of the RNL TSM-ResNet: config, task, loop, callbacks, strategies, checkpoints.

``pipelines/train.py --flagfile=configs/<recipe>.flags`` is the command-line entry point. From
Python: build a :class:`TrainConfig` (sections ``data`` / ``model`` / ``optim`` / ``runtime``, or
flat keywords named as the flags), then ``Trainer(cfg).run()``
(:class:`rnl_keras.training.loop.Trainer`, which runs the hooks of
:class:`rnl_keras.training.task.VideoClassificationTask`). Importing this package is light (no
TensorFlow) until ``Trainer`` is used.
"""
from rnl_keras.training.config import (ConfigError, InputConfig, ModelConfig, OptimConfig,
                                       RuntimeConfig, TrainConfig)

_LAZY = {"Trainer": "loop", "VideoClassificationTask": "task", "epoch_seed": "inputs",
         "weights_digest": "summary"}


def __getattr__(name):
    """``Trainer`` and friends, imported (with TensorFlow) on first use."""
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"rnl_keras.training.{_LAZY[name]}"), name)
    raise AttributeError(name)


__all__ = ["ConfigError", "InputConfig", "ModelConfig", "OptimConfig", "RuntimeConfig",
           "TrainConfig", "Trainer", "VideoClassificationTask", "epoch_seed", "weights_digest"]
