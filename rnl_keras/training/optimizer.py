"""Learning-rate schedules (per step), SGD, weight decay and the parameter groups.

``--param_groups=uniform`` (the default): weight decay follows the PyTorch recipes of TSM and the
RNL release: an L2 term on conv and dense kernels only (variables whose name ends with
``kernel``: Conv/Dense kernels and the RNL ``f_theta_kernel``), none on BatchNorm gamma/beta and
biases. It is added to the loss, so its gradient goes through momentum exactly like
``torch.optim.SGD(weight_decay=...)``; every variable has the same learning rate.

``--param_groups=release``: the authors' release (TSM's ``get_optim_policies``, applied by its
``main.py`` as lr x lr_mult and weight_decay x decay_mult; docs/fidelity.md) with
:class:`GroupedSGD`. Each variable belongs to one group of :data:`RELEASE_GROUPS`, chosen by
:func:`param_groups`; the table of a model is printed at start.
"""
from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf
from keras import ops


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
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then cosine decay to 0 at
    ``total_steps``."""

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
    """The per-step learning-rate schedule (``effective_lr()`` is the peak lr).

    Args:
        cfg: the optimisation section (:class:`~rnl_keras.training.config.OptimConfig`).
        steps_per_epoch: global steps of one epoch.
    """
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


def make_optimizer(cfg, steps_per_epoch: int, schedule=None,
                   groups=None) -> keras.optimizers.Optimizer:
    """The optimizer of the optimisation section.

    Args:
        cfg: the :class:`~rnl_keras.training.config.OptimConfig`.
        steps_per_epoch: for the schedule (when ``schedule`` is None).
        schedule: the learning-rate schedule (default: ``make_schedule(cfg, ...)``).
        groups: ``param_groups(model, "release")``; required with ``--param_groups=release``.
    Returns:
        ``--param_groups=uniform``: SGD with momentum (the paper's), or Adam (beta_1 =
        ``--momentum``) for training from scratch on small data; weight decay (L2 on kernels,
        in the loss) and clipping are applied by the train step. ``release``: a
        :class:`GroupedSGD` that applies the groups' lr multipliers and the decay itself.
    """
    schedule = schedule if schedule is not None else make_schedule(cfg, steps_per_epoch)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=schedule, beta_1=cfg.momentum, name="adam")
    if cfg.param_groups == "release":
        if groups is None:
            raise ValueError("make_optimizer: --param_groups=release needs the groups "
                             "(param_groups(model, 'release'))")
        return GroupedSGD(groups, l2=cfg.weight_decay, learning_rate=schedule,
                          momentum=cfg.momentum, nesterov=cfg.nesterov, name="sgd")
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


# --------------------------------------------------------------------------- parameter groups
@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """One optimiser group: lr = base lr x ``lr_mult``, L2 decay = weight_decay x ``decay_mult``."""

    name: str
    lr_mult: float
    decay_mult: float


# The release's groups (``get_optim_policies`` with fc_lr5, the default from ImageNet, and
# ``--npb``, so every BatchNorm trains), in its order.
RELEASE_GROUPS = {g.name: g for g in (
    ParamGroup("first_conv_weight", 1, 1), ParamGroup("first_conv_bias", 2, 0),
    ParamGroup("normal_weight", 1, 1), ParamGroup("normal_bias", 2, 0),
    ParamGroup("bn", 1, 0), ParamGroup("nl_weight", 1, 1), ParamGroup("nl_bias", 2, 0),
    ParamGroup("lr5_weight", 5, 1), ParamGroup("lr10_bias", 10, 0))}
UNIFORM_GROUPS = {g.name: g for g in (ParamGroup("decayed", 1, 1),
                                      ParamGroup("not_decayed", 1, 0))}
CLASSIFIER = "fc"   # the classifier Dense of rnl_keras.models.tsm_resnet50


def _variable_name(variable) -> str:
    return (getattr(variable, "path", None) or variable.name).split(":")[0].rsplit("/", 1)[-1]


def _own_trainable(layer) -> list:
    """The trainable variables a layer holds itself (not through its sub-layers)."""
    inner = {id(v) for sub in getattr(layer, "_layers", []) for v in sub.trainable_variables}
    return [v for v in layer.trainable_variables if id(v) not in inner]


def _release_group(layer, variable, in_block: bool, first_conv: bool) -> str:
    """The release's group of ``variable`` held by ``layer`` (see :func:`param_groups`)."""
    from rnl_keras.layers import NonLocal, RegionNonLocal
    name = _variable_name(variable)
    if in_block:
        # 'nl' modules: each module's parameters()[0] x1 with decay, [1] x2 without. F_theta's
        # DiagonalwiseRefactorization registers its 0/1 mask first, so its weight is [1]; a
        # BatchNorm's [0] is gamma. Both quirks are kept (docs/fidelity.md).
        if isinstance(layer, (RegionNonLocal, NonLocal)) and name == "f_theta_kernel":
            return "nl_bias"
        return "nl_weight" if name in ("kernel", "gamma") else "nl_bias"
    if isinstance(layer, keras.layers.BatchNormalization):
        return "bn"
    role = "weight" if name == "kernel" else "bias"
    if name not in ("kernel", "bias"):
        raise ValueError(f"param_groups: no rule for variable {variable.path} of layer "
                         f"{layer.name} ({type(layer).__name__})")
    if isinstance(layer, keras.layers.Dense) and layer.name == CLASSIFIER:
        return "lr5_weight" if role == "weight" else "lr10_bias"
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        return f"first_conv_{role}" if first_conv else f"normal_{role}"
    if isinstance(layer, keras.layers.Dense):
        return f"normal_{role}"
    raise ValueError(f"param_groups: no rule for layer {layer.name} ({type(layer).__name__}) "
                     f"holding {variable.path}")


def _release_groups(model) -> dict:
    from rnl_keras.layers import NonLocal, RegionNonLocal
    out, state = {}, {"convs": 0}

    def walk(layer, in_block):
        in_block = in_block or isinstance(layer, (RegionNonLocal, NonLocal))
        own = _own_trainable(layer)
        is_conv = isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D,
                                     keras.layers.Conv3D))
        first = is_conv and not in_block and state["convs"] == 0
        if is_conv and not in_block:
            state["convs"] += 1
        for v in own:
            out[v.path] = RELEASE_GROUPS[_release_group(layer, v, in_block, first)]
        for sub in getattr(layer, "_layers", []):
            walk(sub, in_block)

    for layer in model.layers:
        walk(layer, False)
    return out


def param_groups(model, policy: str = "release") -> dict:
    """The optimiser group of every trainable variable of ``model``.

    ``policy="release"`` (the authors' ``get_optim_policies``; docs/fidelity.md 5.3):

    ===================  =======  =========  ==============================================
    group                lr mult  decay mult  holds
    ===================  =======  =========  ==============================================
    first_conv_weight    1        1          conv1's kernel
    first_conv_bias      2        0          conv1's bias (keras variant only)
    normal_weight        1        1          other conv / dense kernels (incl. the channel
                                             gate's and SE's)
    normal_bias          2        0          their biases
    bn                   1        0          BatchNorm gamma and beta outside RNL / NL
    nl_weight            1        1          inside RegionNonLocal / NonLocal: theta, phi, g,
                                             W_z kernels and, a release quirk, BN gamma
    nl_bias              2        0          their biases, BN beta and, a release quirk,
                                             F_theta's kernel
    lr5_weight           5        1          classifier ``fc`` kernel
    lr10_bias            10       0          classifier ``fc`` bias
    ===================  =======  =========  ==============================================

    The quirks come from the release's rule inside the blocks (a module's first parameter x1 with
    decay, its second x2 without): F_theta registers its 0/1 mask before its weight, and a
    BatchNorm lists gamma before beta. They are replicated, so ``release`` trains as the
    authors' code did. The SE of ``se+rnl`` (not in the release) follows the rules outside the
    blocks.
    ``policy="uniform"``: ``decayed`` (x1, decay: conv / dense kernels and F_theta) and
    ``not_decayed`` (x1, no decay: BatchNorm and biases), today's default.

    Args:
        model: a Keras model (e.g. ``tsm_resnet50``).
        policy: ``"release"`` or ``"uniform"``.
    Returns:
        {variable path: ParamGroup}, in ``model.trainable_variables`` order.
    Raises:
        ValueError for a variable no rule covers (a new layer type needs a rule, as in the
        release).
    """
    if policy == "uniform":
        return {v.path: UNIFORM_GROUPS["decayed" if is_decayed(v) else "not_decayed"]
                for v in model.trainable_variables}
    if policy != "release":
        raise ValueError(f"param_groups: policy must be 'uniform' or 'release', got {policy!r}")
    found = _release_groups(model)
    ordered = {}
    for v in model.trainable_variables:
        if v.path not in found:
            raise ValueError(f"param_groups: variable {v.path} has no group")
        ordered[v.path] = found[v.path]
    return ordered


def group_table(groups: dict, model) -> list:
    """Rows (group, lr_mult, decay_mult, variables, parameters) of ``param_groups``' result."""
    sizes = {v.path: int(math.prod(v.shape)) for v in model.trainable_variables}
    rows = {}
    for path, group in groups.items():
        row = rows.setdefault(group.name, [group.name, group.lr_mult, group.decay_mult, 0, 0])
        row[3] += 1
        row[4] += sizes[path]
    order = list(RELEASE_GROUPS) + list(UNIFORM_GROUPS)
    return [tuple(rows[n]) for n in sorted(rows, key=lambda n: order.index(n) if n in order
                                           else len(order))]


def format_group_table(rows) -> str:
    """The rows of :func:`group_table` as an aligned text table."""
    lines = [f"{'group':<18} {'lr x':>5} {'decay x':>7} {'variables':>9} {'parameters':>12}"]
    lines += [f"{n:<18} {lr:>5g} {d:>7g} {count:>9d} {size:>12,d}"
              for n, lr, d, count, size in rows]
    return "\n".join(lines)


class GroupedSGD(keras.optimizers.SGD):
    """SGD exactly as ``torch.optim.SGD`` with parameter groups (the release's optimiser).

    For a variable w in a group (lr_mult, decay_mult), with the step's learning rate lr:
        d = g + weight_decay * decay_mult * w          coupled L2 decay (PyTorch's weight_decay)
        b = mu * b + d                                 momentum buffer (b = d at the first step)
        w = w - lr * lr_mult * (d + mu * b if nesterov else b)
    i.e. the buffer holds gradients and the *current* lr scales the whole buffer, as PyTorch does
    (Keras' own SGD keeps lr-scaled velocities, which differs whenever the lr changes: warm-up,
    cosine, every step decay). The decay is added here, after the train step's gradient clipping,
    as PyTorch adds it inside ``step()`` after ``clip_grad_norm_``. The buffers are this
    optimizer's ``momentums`` variables (checkpointed with it).

    Args:
        groups: {variable path: ParamGroup} (:func:`param_groups`).
        l2: the base weight decay (``--weight_decay``).
        **kwargs: of ``keras.optimizers.SGD``.
    """

    def __init__(self, groups: dict, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self._groups = dict(groups)
        self.l2 = float(l2)
        self._multipliers = []

    def build(self, variables):
        super().build(variables)
        missing = [v.path for v in variables if v.path not in self._groups]
        if missing:
            raise ValueError(f"GroupedSGD: no parameter group for {missing[:5]}")
        self._multipliers = [(float(self._groups[v.path].lr_mult),
                              float(self._groups[v.path].decay_mult)) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        lr_mult, decay_mult = self._multipliers[self._get_variable_index(variable)]
        d = ops.cast(gradient, variable.dtype)
        if self.l2 and decay_mult:
            d = ops.add(d, ops.multiply(ops.cast(self.l2 * decay_mult, variable.dtype), variable))
        lr = ops.multiply(ops.cast(learning_rate, variable.dtype),
                          ops.cast(lr_mult, variable.dtype))
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(d, lr))
            return
        mu = ops.cast(self.momentum, variable.dtype)
        buffer = self.momentums[self._get_variable_index(variable)]
        # b starts at 0, so the first step's mu * 0 + d is PyTorch's b = d.
        self.assign(buffer, ops.add(ops.multiply(buffer, mu), d))
        step = ops.add(d, ops.multiply(buffer, mu)) if self.nesterov else buffer
        self.assign_sub(variable, ops.multiply(step, lr))

    def get_config(self):
        return {**super().get_config(), "l2": self.l2,
                "groups": {p: dataclasses.astuple(g) for p, g in self._groups.items()}}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["groups"] = {p: ParamGroup(*g) for p, g in config.pop("groups").items()}
        return super().from_config(config, custom_objects=custom_objects)
