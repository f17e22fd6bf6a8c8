"""Learning-rate schedules (per step), SGD, and the weight-decay filter.

Weight decay follows the PyTorch recipes of TSM and the RNL release: an L2 term on conv and dense
kernels only (variables whose name ends with ``kernel``: Conv/Dense kernels and the RNL
``f_theta_kernel``), none on BatchNorm gamma/beta and biases. It is added to the loss, so its
gradient goes through momentum exactly like ``torch.optim.SGD(weight_decay=...)``.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="rnl_keras")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr x factor^(epoch // decay_epochs), evaluated per step, with an optional linear warm-up."""

    def __init__(self, base_lr, steps_per_epoch, decay_epochs, factor=0.1, warmup_steps=0,
                 warmup_start_factor=0.1):
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.decay_epochs = int(decay_epochs)
        self.factor = float(factor)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_factor = float(warmup_start_factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        decays = tf.floor(step / float(self.steps_per_epoch * self.decay_epochs))
        lr = self.base_lr * tf.pow(self.factor, decays)
        return _warmup(lr, step, self.base_lr, self.warmup_steps, self.warmup_start_factor)

    def get_config(self):
        return dict(base_lr=self.base_lr, steps_per_epoch=self.steps_per_epoch,
                    decay_epochs=self.decay_epochs, factor=self.factor,
                    warmup_steps=self.warmup_steps, warmup_start_factor=self.warmup_start_factor)


@keras.saving.register_keras_serializable(package="rnl_keras")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""

    def __init__(self, base_lr, total_steps, warmup_steps=0, warmup_start_factor=0.1):
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_factor = float(warmup_start_factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
        lr = 0.5 * self.base_lr * (1.0 + tf.cos(math.pi * progress))
        return _warmup(lr, step, self.base_lr, self.warmup_steps, self.warmup_start_factor)

    def get_config(self):
        return dict(base_lr=self.base_lr, total_steps=self.total_steps,
                    warmup_steps=self.warmup_steps, warmup_start_factor=self.warmup_start_factor)


@keras.saving.register_keras_serializable(package="rnl_keras")
class Constant(keras.optimizers.schedules.LearningRateSchedule):
    """A constant lr with an optional linear warm-up."""

    def __init__(self, base_lr, warmup_steps=0, warmup_start_factor=0.1):
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_factor = float(warmup_start_factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        return _warmup(tf.constant(self.base_lr), step, self.base_lr, self.warmup_steps,
                       self.warmup_start_factor)

    def get_config(self):
        return dict(base_lr=self.base_lr, warmup_steps=self.warmup_steps,
                    warmup_start_factor=self.warmup_start_factor)


def _warmup(lr, step, base_lr, warmup_steps, start_factor):
    if warmup_steps <= 0:
        return lr
    frac = tf.minimum(step / float(warmup_steps), 1.0)
    warm = base_lr * (start_factor + (1.0 - start_factor) * frac)
    return tf.where(step < warmup_steps, warm, lr)


def make_schedule(cfg, steps_per_epoch: int):
    """The schedule of a TrainConfig (``cfg.effective_lr()`` is the peak lr)."""
    base = cfg.effective_lr()
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.lr_schedule == "step":
        return StepDecay(base, steps_per_epoch, cfg.lr_decay_epochs, cfg.lr_decay_factor,
                         warmup, cfg.warmup_start_factor)
    if cfg.lr_schedule == "cosine":
        return WarmupCosine(base, cfg.epochs * steps_per_epoch, warmup, cfg.warmup_start_factor)
    if cfg.lr_schedule == "constant":
        return Constant(base, warmup, cfg.warmup_start_factor)
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}")


def make_optimizer(cfg, steps_per_epoch: int, schedule=None) -> keras.optimizers.Optimizer:
    """SGD with momentum (the paper's), or Adam (beta_1 = ``--momentum``) for training from scratch
    on small data; weight decay (L2 on kernels) and clipping are applied by the train step."""
    schedule = schedule if schedule is not None else make_schedule(cfg, steps_per_epoch)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=schedule, beta_1=cfg.momentum, name="adam")
    return keras.optimizers.SGD(learning_rate=schedule,
                                momentum=cfg.momentum, nesterov=cfg.nesterov, name="sgd")


def is_decayed(variable) -> bool:
    """Weight decay applies to conv / dense kernels, never to BatchNorm parameters or biases."""
    name = (getattr(variable, "path", None) or variable.name).split(":")[0]
    return name.rsplit("/", 1)[-1].endswith("kernel")


def decayed_variables(model) -> list:
    return [v for v in model.trainable_variables if is_decayed(v)]


def l2_penalty(variables, weight_decay: float):
    """``weight_decay / 2 * sum ||w||^2`` (gradient: ``weight_decay * w``), float32."""
    if not weight_decay or not variables:
        return tf.constant(0.0)
    return 0.5 * weight_decay * tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                                          for v in variables])
