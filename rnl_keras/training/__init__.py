"""Training of the RNL TSM-ResNet50: config, strategies, schedules, checkpoints, custom loop.

``pipelines/train.py --flagfile=configs/<recipe>.flags`` is the command-line entry point;
:class:`rnl_keras.training.loop.Trainer` does the work and can be used from Python. Importing
this package is light (no TensorFlow) until ``Trainer`` is used.
"""
from rnl_keras.training.config import ConfigError, TrainConfig


def __getattr__(name):
    if name in ("Trainer", "epoch_seed", "weights_digest"):
        from rnl_keras.training import loop
        return getattr(loop, name)
    raise AttributeError(name)


__all__ = ["ConfigError", "TrainConfig", "Trainer", "epoch_seed", "weights_digest"]
