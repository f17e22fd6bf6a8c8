"""Video classification as a task: the model, the inputs, one training step, one validation step.

In the shape of TF Model Garden's ``official/vision/tasks/video_classification.py``: the loop
(:mod:`rnl_keras.training.loop`) owns the strategy, the counters, checkpoints and callbacks and
calls these hooks:

* :meth:`VideoClassificationTask.build_model`: the (RNL) TSM-ResNet of every model flag, from
  its ImageNet start when one is given;
* :meth:`~VideoClassificationTask.build_optimizer`: the parameter groups, the per-step learning
  rate schedule and the optimizer;
* :meth:`~VideoClassificationTask.build_inputs`: one input pipeline's training or validation
  dataset (local pipelines or the tf.data service);
* :meth:`~VideoClassificationTask.train_step`: one replica's forward, loss (cross-entropy with
  optional label smoothing, plus the L2 decay of ``--param_groups=uniform``), gradient
  accumulation over micro-batches, clipping of the all-reduced gradient and the update;
* :meth:`~VideoClassificationTask.validation_step`: single-view top-1 / top-5 / loss sums.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from rnl_keras.training import optimizer as optim
from rnl_keras.training.config import ConfigError, TrainConfig
from rnl_keras.training.inputs import TaskInputs


class VideoClassificationTask:
    """The hooks of one training run (see the module docstring).

    Args:
      cfg: the run's config.
      steps_per_epoch: steps of one epoch (the schedule and the inputs need it).
      replicas: replicas in sync (all workers).
      train_dataset_fn, val_dataset_fn: in-memory datasets instead of the list files (tests;
        see :class:`rnl_keras.training.inputs.TaskInputs`).
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, replicas: int,
                 train_dataset_fn=None, val_dataset_fn=None):
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.replicas = replicas
        self.per_replica_batch = cfg.optim.per_replica_batch(replicas)
        self.inputs = TaskInputs(cfg, steps_per_epoch, train_dataset_fn, val_dataset_fn)
        self.model = self.optimizer = self.schedule = None
        self.decayed = []
        self.loss_fn = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=cfg.optim.label_smoothing, reduction=None)
        self._eval_forward = None

    # ------------------------------------------------------------------------------- building
    def build_model(self) -> keras.Model:
        """The model of the config; records its start (``self.start_record``, for summary.json).

        Raises ConfigError naming ``--pretrained_weights`` for a weights file that does not fit
        (the message names the file and the first bad tensor).
        """
        cfg = self.cfg
        from rnl_keras.models import PretrainedWeightsError, tsm_resnet50, weights_record
        try:
            self.model = tsm_resnet50(cfg.data.num_classes, **cfg.model_kwargs())
        except PretrainedWeightsError as err:
            raise ConfigError("pretrained_weights", str(err)) from None
        # After the model: an "imagenet" start is then downloaded into the cache.
        self.start_record = weights_record(cfg.model.weights_arg(), cfg.model.resnet_variant,
                                           include_top=cfg.data.num_classes == 1000)
        return self.model

    def build_optimizer(self, model: keras.Model):
        """The parameter groups (``self.param_groups``, ``self.group_rows``), the schedule and
        the optimizer (built for the model's trainable variables); returns the optimizer."""
        o = self.cfg.optim
        self.param_groups = optim.param_groups(model, o.param_groups)
        self.group_rows = optim.group_table(self.param_groups, model)
        self.schedule = optim.make_schedule(o, self.steps_per_epoch)
        self.optimizer = optim.make_optimizer(o, self.steps_per_epoch, self.schedule,
                                              groups=self.param_groups)
        self.optimizer.build(model.trainable_variables)
        # --param_groups=release: GroupedSGD adds the decay itself, after gradient clipping.
        self.decayed = optim.decayed_variables(model) if o.param_groups == "uniform" else []
        return self.optimizer

    def group_table(self) -> str:
        """The parameter-group table printed at the start."""
        o = self.cfg.optim
        return (f"Parameter groups (--param_groups={o.param_groups}; lr x base lr, decay "
                f"x --weight_decay={o.weight_decay:g}):\n"
                + optim.format_group_table(self.group_rows))

    def build_inputs(self, ctx: tf.distribute.InputContext, training: bool, epoch: int = 0,
                     skip_steps: int = 0, batch: int = 0, workers: int = 1) -> tf.data.Dataset:
        """One input pipeline's dataset.

        Args:
          ctx: the pipeline's InputContext.
          training: the training split (epoch ``epoch``, ``skip_steps`` steps skipped, one pass
            then end-of-pass markers), else the validation split (``batch`` clips per batch,
            this worker's share of ``workers``).
        """
        if training:
            return self.inputs.train(ctx, epoch, skip_steps, self.per_replica_batch)
        return self.inputs.val(ctx, batch, workers)

    # ---------------------------------------------------------------------------------- steps
    def train_step(self, clips, labels):
        """One replica's update (run by ``strategy.run`` inside a tf.function).

        The loss of each example is divided by the GLOBAL batch, so the all-reduced SUM of the
        replicas' gradients is the gradient of the batch mean. Returns (2,) float32: the
        replica's cross-entropy sum and correct count.
        """
        o = self.cfg.optim
        k = o.grad_accum_steps
        variables = self.model.trainable_variables
        clip_chunks = tf.split(clips, k) if k > 1 else [clips]
        label_chunks = tf.split(labels, k) if k > 1 else [labels]
        grads, ce_sum, correct = None, tf.constant(0.0), tf.constant(0.0)
        for x, y in zip(clip_chunks, label_chunks):   # micro-batches (gradient accumulation)
            g, ce, right = self._micro_batch(x, y, variables)
            grads = g if grads is None else [a + b for a, b in zip(grads, g)]
            ce_sum += ce
            correct += right
        self.optimizer.apply_gradients(zip(self._clip(grads), variables))
        return tf.stack([ce_sum, correct])

    def _micro_batch(self, x, y, variables):
        """Gradients, cross-entropy sum and correct count of one micro-batch."""
        o = self.cfg.optim
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(x, training=True), tf.float32)
            per_example = self.loss_fn(tf.one_hot(y, self.cfg.data.num_classes), logits)
            # Sum over the replica's examples / GLOBAL batch: all-reduce SUM = mean.
            loss = tf.reduce_sum(per_example) / o.batch_size
            if o.weight_decay:
                loss += optim.l2_penalty(self.decayed, o.weight_decay) / (
                    self.replicas * o.grad_accum_steps)
        grads = tape.gradient(loss, variables)
        correct = tf.reduce_sum(tf.cast(
            tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
        return grads, tf.reduce_sum(per_example), correct

    def _clip(self, grads):
        """Clip the global norm (``--clip_grad_norm``) of the all-reduced gradient."""
        limit, replicas = self.cfg.optim.clip_grad_norm, self.replicas
        if limit <= 0:
            return grads
        if replicas > 1:
            # Clip the all-reduced gradient; the optimizer sums again, hence / replicas.
            ctx = tf.distribute.get_replica_context()
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            grads, _ = tf.clip_by_global_norm(grads, limit)
            return [g / replicas for g in grads]
        grads, _ = tf.clip_by_global_norm(grads, limit)
        return grads

    def validation_step(self, clips, labels) -> np.ndarray:
        """Sums of one validation batch: [top-1 correct, top-5 correct, loss, count]."""
        if self._eval_forward is None:
            model = self.model
            self._eval_forward = tf.function(lambda x: model(x, training=False),
                                             reduce_retracing=True)
        labels = tf.cast(labels, tf.int32)
        logits = tf.cast(self._eval_forward(clips), tf.float32)
        top = tf.math.top_k(logits, min(5, self.cfg.data.num_classes)).indices
        return np.array([
            float(tf.reduce_sum(tf.cast(tf.equal(top[:, 0], labels), tf.float32))),
            float(tf.reduce_sum(tf.cast(tf.reduce_any(
                tf.equal(top, labels[:, None]), axis=1), tf.float32))),
            float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, logits))),
            int(labels.shape[0])], np.float64)
