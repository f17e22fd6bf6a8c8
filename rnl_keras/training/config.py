"""The training configuration, nested by concern, independent of absl, and its checks.

A :class:`TrainConfig` holds four sections: ``data`` (:class:`InputConfig`: lists, sampling,
augmentation, the tf.data service), ``model`` (:class:`ModelConfig`: the network and its start),
``optim`` (:class:`OptimConfig`: epochs, batch, schedule, optimizer) and ``runtime``
(:class:`RuntimeConfig`: strategy, precision, checkpoints, logging, seed). Every field is named
as its command-line flag (``rnl_keras/training/flags.py`` builds the config from the flags), and
``TrainConfig(train_list=..., lr=...)`` with flat keywords still works. Every check raises
:class:`ConfigError` whose message starts with the flag (``--batch_size: ...``), so
``pipelines/train.py`` can refuse bad flags before any work. The model fields are checked by
:func:`check_model_values` and turned into ``tsm_resnet50`` arguments by :func:`model_kwargs`;
``pipelines/profile.py`` uses both too (through ``rnl_keras/training/model_flags.py``).
"""
from __future__ import annotations

import dataclasses
import os

ATTENTIONS = ("none", "nl", "se", "gate", "rnl", "se+rnl")
STRATEGIES = ("default", "mirrored", "multi_worker")
SCHEDULES = ("step", "cosine", "constant")
MIXED_PRECISIONS = ("none", "bfloat16")
# Copies of the layers' own tuples (attention.SIMILARITIES, region_nonlocal.AGGREGATIONS), so
# that flags are checked without importing Keras; tests/training/test_flags.py pins them equal.
RNL_SIMILARITIES = ("gaussian", "dot", "cosine")
RNL_AGGREGATIONS = ("conv", "avg", "max")
# Copies of rnl_keras.models.tsm_resnet's STAGE_NAMES stages and VARIANTS (pinned by the same test).
STAGES = ("res2", "res3", "res4", "res5")
RESNET_VARIANTS = ("keras", "torchvision")
PARAM_GROUPS = ("uniform", "release")
# A recipe whose name ends so reproduces the paper / the release, which start from ImageNet.
IMAGENET_RECIPES = ("_paper", "_released")
# --pretrained_weights values that are not files ("imagenet": the download of the variant's file).
NO_WEIGHTS, KERAS_IMAGENET = "none", "imagenet"
TORCH_WEIGHT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".npz")


class ConfigError(ValueError):
    """A flag value that cannot work; ``flag`` is its name (without dashes)."""

    def __init__(self, flag: str, why: str):
        super().__init__(f"--{flag}: {why}")
        self.flag = flag


def _positive(section, name: str, strict: bool = True) -> None:
    """Raise ConfigError unless ``section.<name>`` is > 0 (``strict``) or >= 0."""
    value = getattr(section, name)
    if value is None or (value <= 0 if strict else value < 0):
        raise ConfigError(name, f"must be {'> 0' if strict else '>= 0'}, got {value!r}")


@dataclasses.dataclass
class InputConfig:
    """The data section: what ``build_inputs`` reads (see ``flags.py`` for each field)."""

    train_list: str
    num_classes: int
    data_source: str = "video"
    val_list: str | None = None
    data_root: str = ""
    val_root: str = ""
    classes_file: str | None = None
    frame_template: str = "img_{:05d}.jpg"
    num_frames: int = 8
    image_size: int = 224
    resize_shorter: int = 256
    sampling: str = "tsn"
    dense_stride: int = 8
    flip: bool = True
    on_bad_sample: str = "skip"
    num_parallel_calls: int = -1
    deterministic_data: bool = True
    shuffle_buffer: int = 1024
    val_batch_size: int = 0
    val_max_videos: int = 0
    data_service: str = ""                # grpc://HOST:PORT of a tf.data service dispatcher
    data_service_timeout_s: float = 300.0

    def check(self) -> None:
        """Range checks of the data fields (no file system access)."""
        for name in ("num_classes", "num_frames", "image_size", "resize_shorter",
                     "dense_stride", "shuffle_buffer"):
            _positive(self, name)
        for name in ("val_batch_size", "val_max_videos"):
            _positive(self, name, strict=False)
        if self.resize_shorter < self.image_size:
            raise ConfigError("resize_shorter", f"must be >= --image_size ({self.image_size})")
        try:
            self.frame_template.format(1)
        except (IndexError, KeyError, ValueError) as err:
            raise ConfigError("frame_template", f"cannot format a frame number ({err})") from None
        self._check_data_service()

    def _check_data_service(self) -> None:
        """``--data_service``: a ``grpc://HOST:PORT`` address, TFRecord shards only (the
        service cannot run the Python video decoders on its workers: rnl_keras.data.service)."""
        if not self.data_service:
            return
        from rnl_keras.data.service_address import (DataServiceAddressError,
                                                    parse_service_address)
        try:
            parse_service_address(self.data_service)
        except DataServiceAddressError as err:
            raise ConfigError("data_service", str(err).split(": ", 1)[-1]) from None
        if self.data_source != "tfrecord":
            raise ConfigError("data_service", "needs --data_source=tfrecord (shards written by "
                              "pipelines/prepare_data.py): video / frame input is decoded by "
                              "Python inside tf.py_function, which tf.data service workers "
                              f"cannot run; got --data_source={self.data_source}")
        if not self.data_service_timeout_s > 0:
            raise ConfigError("data_service_timeout_s",
                              f"must be > 0, got {self.data_service_timeout_s!r}")


@dataclasses.dataclass
class ModelConfig:
    """The model section: the network, its ablations and its start (``build_model``)."""

    attention: str = "rnl"
    shift: bool = True
    fold_div: int = 8
    dropout: float = 0.5
    resnet_variant: str = "keras"
    pretrained_weights: str | None = None
    channel_gate: bool = False
    stage_blocks: tuple = (3, 4, 6, 3)
    base_width: int = 64
    placement: tuple = (("res3", 0), ("res3", 2), ("res4", 0), ("res4", 2), ("res4", 4))
    rnl_similarity: str = "gaussian"
    rnl_aggregation: str = "conv"
    key_subsample: bool = False
    query_chunk_size: int = 0
    rnl_kernel_sizes: tuple = ()          # ((stage, (kt, kh, kw)), ...); () = the paper's
    nl_subsample: bool = False
    se_reduction: int = 16
    gate_bn_momentum: float = 0.99
    classifier_init: str = "release"     # "release" N(0, 0.001) | "glorot"
    sync_bn: bool = False
    trust_pickled_code: bool = False
    recipe: str = ""

    def weights_arg(self):
        """``tsm_resnet50(weights=...)``: None for a random start, else the file or "imagenet"."""
        if not self.pretrained_weights or self.pretrained_weights.strip().lower() in (
                NO_WEIGHTS, "random"):
            return None
        return self.pretrained_weights

    def check(self) -> None:
        """The ablation values, the dropout, and the start (weights vs. recipe and backbone)."""
        check_model_values(dataclasses.asdict(self))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        self._check_weights()

    def check_files(self) -> None:
        """Checks that read the file system (run before any work): the weights file exists."""
        weights = self.weights_arg()
        if weights and weights.lower() != KERAS_IMAGENET and not os.path.isfile(weights):
            where = (f" (named by --recipe={self.recipe}: see configs/{self.recipe}.flags for "
                     "where to get it)" if self.recipe else "")
            raise ConfigError("pretrained_weights", f"no such file: {weights}{where}; "
                              f"--pretrained_weights={NO_WEIGHTS} trains from random "
                              "initialisation")

    def _check_weights(self) -> None:
        """The start: recipes of the paper / release need ImageNet weights or an explicit none."""
        weights = self.weights_arg()
        if self.recipe.endswith(IMAGENET_RECIPES) and not self.pretrained_weights:
            raise ConfigError(
                "pretrained_weights", f"--recipe={self.recipe} starts from ImageNet weights, as "
                "the paper and the authors' release do, but none were given. Pass "
                "--pretrained_weights=<torchvision resnet50 ImageNet .pth or .npz> with "
                "--resnet_variant=torchvision (configs/*_paper.flags say where to get it), "
                f"or --pretrained_weights={NO_WEIGHTS} to train from random initialisation on "
                "purpose")
        if not weights:
            return
        if tuple(self.stage_blocks) != (3, 4, 6, 3) or self.base_width != 64:
            raise ConfigError("pretrained_weights", "ResNet-50 weights need the ResNet-50 "
                              "backbone (--stage_blocks=3,4,6,3 --base_width=64)")
        name = weights.lower()
        wanted = ("torchvision" if name.endswith(TORCH_WEIGHT_SUFFIXES) else
                  "keras" if name.endswith(".h5") else None)   # "imagenet": either variant
        if wanted and wanted != self.resnet_variant:
            raise ConfigError("resnet_variant", f"--pretrained_weights={weights} is a {wanted} "
                              f"ResNet-50 and loads into --resnet_variant={wanted}, not "
                              f"{self.resnet_variant}")


@dataclasses.dataclass
class OptimConfig:
    """The optimisation section: epochs, batch, schedule, optimizer, regularisation."""

    epochs: int = 50
    steps_per_epoch: int | None = None
    batch_size: int = 64
    grad_accum_steps: int = 1
    lr: float = 0.01
    scale_lr_with_replicas: bool = False
    reference_batch_size: int = 64
    lr_schedule: str = "step"
    lr_decay_epochs: int = 20
    lr_decay_factor: float = 0.1
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    clip_grad_norm: float = 20.0
    label_smoothing: float = 0.0
    param_groups: str = "uniform"

    def check(self) -> None:
        """Range and consistency checks of the optimisation fields."""
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError("lr_schedule", f"must be one of {SCHEDULES}")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError("optimizer", f"must be sgd or adam, got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "grad_accum_steps", "lr", "reference_batch_size",
                     "lr_decay_epochs"):
            _positive(self, name)
        for name in ("weight_decay", "clip_grad_norm", "label_smoothing", "warmup_epochs",
                     "momentum"):
            _positive(self, name, strict=False)
        if self.steps_per_epoch is not None:
            _positive(self, "steps_per_epoch")
        self._check_ranges()
        self._check_groups()

    def _check_ranges(self) -> None:
        if not 0.0 < self.lr_decay_factor <= 1.0:
            raise ConfigError("lr_decay_factor", f"must be in (0, 1], got {self.lr_decay_factor}")
        if not 0.0 <= self.warmup_start_factor <= 1.0:
            raise ConfigError("warmup_start_factor", "must be in [0, 1]")
        if self.label_smoothing >= 1.0:
            raise ConfigError("label_smoothing", "must be < 1")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ConfigError("warmup_epochs", f"must be < --epochs ({self.epochs})")
        if self.batch_size % self.grad_accum_steps:
            raise ConfigError("batch_size", f"{self.batch_size} is not divisible by "
                              f"--grad_accum_steps={self.grad_accum_steps}")

    def _check_groups(self) -> None:
        if self.param_groups not in PARAM_GROUPS:
            raise ConfigError("param_groups", f"must be one of {PARAM_GROUPS}, got "
                              f"{self.param_groups!r}")
        if self.param_groups == "release" and self.optimizer != "sgd":
            raise ConfigError("param_groups", "release (per-group learning rates) needs "
                              f"--optimizer=sgd, got {self.optimizer}: Adam is invariant to a "
                              "gradient's scale, so the groups' lr multipliers would vanish")

    def check_replicas(self, num_replicas: int) -> None:
        """The global batch must split evenly over replicas and accumulation micro-batches."""
        if self.batch_size % (num_replicas * self.grad_accum_steps):
            raise ConfigError(
                "batch_size", f"global batch {self.batch_size} is not divisible by "
                f"{num_replicas} replica(s) x --grad_accum_steps={self.grad_accum_steps}")

    def per_replica_batch(self, num_replicas: int) -> int:
        return self.batch_size // num_replicas

    def effective_lr(self) -> float:
        """The peak learning rate after the optional linear scaling rule."""
        if self.scale_lr_with_replicas:
            return self.lr * self.batch_size / self.reference_batch_size
        return self.lr


@dataclasses.dataclass
class RuntimeConfig:
    """The runtime section: where and how the loop runs, saves and logs."""

    model_dir: str
    strategy: str = "default"
    cpu_devices: int = 0
    mixed_precision: str = "none"
    jit_compile: bool = False
    checkpoint_every_steps: int = 500
    keep_checkpoints: int = 3
    log_every_steps: int = 10
    val_every_epochs: int = 1
    seed: int = 0
    progress: bool = True
    peer_timeout_s: float = 600.0

    def check(self) -> None:
        """Range checks of the runtime fields."""
        if self.strategy not in STRATEGIES:
            raise ConfigError("strategy", f"must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ConfigError("mixed_precision", f"must be one of {MIXED_PRECISIONS}")
        for name in ("log_every_steps", "val_every_epochs", "keep_checkpoints",
                     "peer_timeout_s"):
            _positive(self, name)
        for name in ("checkpoint_every_steps", "cpu_devices"):
            _positive(self, name, strict=False)


SECTIONS = {"data": InputConfig, "model": ModelConfig, "optim": OptimConfig,
            "runtime": RuntimeConfig}


def _section_of(name: str) -> str:
    for section, cls in SECTIONS.items():
        if name in {f.name for f in dataclasses.fields(cls)}:
            return section
    raise TypeError(f"TrainConfig: unknown field {name!r}")


@dataclasses.dataclass(init=False)
class TrainConfig:
    """All the settings of one training run, by concern: ``data``, ``model``, ``optim``,
    ``runtime``.

    Args:
      data, model, optim, runtime: the sections; or, instead, flat keywords named as the
        flags (``TrainConfig(train_list="t.txt", num_classes=8, model_dir="m", lr=0.1)``),
        each routed to its section (train_list, num_classes and model_dir are required).
    """

    data: InputConfig
    model: ModelConfig
    optim: OptimConfig
    runtime: RuntimeConfig

    def __init__(self, data: InputConfig | None = None, model: ModelConfig | None = None,
                 optim: OptimConfig | None = None, runtime: RuntimeConfig | None = None,
                 **flat):
        given = {"data": data, "model": model, "optim": optim, "runtime": runtime}
        routed = {section: {} for section in SECTIONS}
        for name, value in flat.items():
            routed[_section_of(name)][name] = value
        for section, cls in SECTIONS.items():
            if given[section] is not None and routed[section]:
                raise TypeError(f"TrainConfig: {section}= given together with its fields "
                                f"{sorted(routed[section])}")
            setattr(self, section, given[section] if given[section] is not None
                    else cls(**routed[section]))

    def model_kwargs(self) -> dict:
        """All the ``tsm_resnet50`` arguments of this run except ``num_classes``."""
        m = self.model
        return {**model_kwargs(dataclasses.asdict(m)), "attention": m.attention,
                "num_frames": self.data.num_frames, "image_size": self.data.image_size,
                "dropout": m.dropout, "weights": m.weights_arg(), "sync_bn": m.sync_bn,
                "trust_pickled_code": m.trust_pickled_code}

    def check(self) -> None:
        """Static range checks of every section (no file system access)."""
        self.model.check()
        self.runtime.check()
        self.optim.check()
        self.data.check()

    def check_files(self) -> None:
        """Checks that read the file system (run before any work)."""
        self.model.check_files()

    def to_dict(self) -> dict:
        """Every field, flat ({flag name: value}): the run's ``config.json``."""
        out = {}
        for section in SECTIONS:
            out.update(dataclasses.asdict(getattr(self, section)))
        return out


def check_model_values(values: dict) -> None:
    """Check the model fields of a TrainConfig (or of ``pipelines/profile.py``'s flags).

    Args:
        values: {field: value} with at least the keys of ``model_flags.MODEL_FLAGS`` and
            ``attention``.
    Raises:
        ConfigError naming the flag.
    """
    attention = values["attention"]
    if attention not in ATTENTIONS:
        raise ConfigError("attention", f"unknown attention {attention!r}; choose one of "
                          f"{', '.join(ATTENTIONS)}")
    for name, choices in (("rnl_similarity", RNL_SIMILARITIES),
                          ("rnl_aggregation", RNL_AGGREGATIONS),
                          ("resnet_variant", RESNET_VARIANTS)):
        if values[name] not in choices:
            raise ConfigError(name, f"must be one of {choices}, got {values[name]!r}")
    for name, low in (("fold_div", 1), ("base_width", 1), ("se_reduction", 1),
                      ("query_chunk_size", 0)):
        if values[name] is None or values[name] < low:
            raise ConfigError(name, f"must be >= {low}, got {values[name]!r}")
    if values["classifier_init"] not in ("release", "glorot"):
        raise ConfigError("classifier_init", f"must be release or glorot, got "
                          f"{values['classifier_init']!r}")
    if not 0.0 <= values["gate_bn_momentum"] < 1.0:
        raise ConfigError("gate_bn_momentum", f"must be in [0, 1) (Keras convention: the "
                          f"moving average keeps this fraction), got {values['gate_bn_momentum']}")
    _check_backbone(values, attention)


def _check_backbone(values: dict, attention: str) -> None:
    """--stage_blocks, --placement and --rnl_kernel_sizes against each other."""
    blocks = tuple(values["stage_blocks"])
    if len(blocks) != 4 or min(blocks) < 1:
        raise ConfigError("stage_blocks", f"must be 4 positive ints, got {blocks}")
    counts = dict(zip(STAGES, blocks))
    placement = tuple(tuple(p) for p in values["placement"]) if attention != "none" else ()
    for stage, index in placement:
        if stage not in counts or not 0 <= index < counts[stage]:
            raise ConfigError("placement", f"{stage}:{index} is not a block of the backbone "
                              f"(blocks per stage: {counts})")
    _check_kernel_sizes(values["rnl_kernel_sizes"], attention, {s for s, _ in placement})


def _check_kernel_sizes(kernel_sizes, attention: str, stages: set) -> None:
    for stage, size in kernel_sizes:
        if stage not in STAGES:
            raise ConfigError("rnl_kernel_sizes", f"unknown stage {stage!r}; one of {STAGES}")
        size = tuple(size)
        if len(size) != 3 or not all(isinstance(k, int) and k > 0 and k % 2 for k in size):
            raise ConfigError("rnl_kernel_sizes", f"{stage}: the region size must be three odd "
                              f"positive integers (kt, kh, kw) ('same' padding needs odd sizes), "
                              f"got {'x'.join(str(k) for k in size)}")
        if attention in ("rnl", "se+rnl") and stage not in stages:
            raise ConfigError("rnl_kernel_sizes", f"{stage} has no RNL block (--placement "
                              f"stages: {', '.join(sorted(stages)) or 'none'})")


def model_kwargs(values: dict) -> dict:
    """The ``tsm_resnet50`` arguments of the model fields (not attention, T, size, weights).

    Args:
        values: {field: value} of a ModelConfig (``dataclasses.asdict``) or of
            ``model_flags.model_values``.
    Returns:
        dict of keyword arguments of ``rnl_keras.models.tsm_resnet50``.
    """
    chunk = values["query_chunk_size"] or None
    placement = tuple((stage, int(index)) for stage, index in values["placement"])
    kernels = {stage: tuple(size) for stage, size in values["rnl_kernel_sizes"]}
    rnl = {"similarity": values["rnl_similarity"], "aggregation": values["rnl_aggregation"],
           "key_subsample": values["key_subsample"], "query_chunk_size": chunk}
    return {
        "shift": values["shift"], "fold_div": values["fold_div"],
        "resnet_variant": values["resnet_variant"],
        "stage_blocks": tuple(values["stage_blocks"]), "base_width": values["base_width"],
        "placement": placement, "rnl_kernel_sizes": kernels or None, "rnl_kwargs": rnl,
        "nl_kwargs": {"subsample": values["nl_subsample"], "query_chunk_size": chunk},
        "se_reduction": values["se_reduction"],
        "channel_gate_at": (placement[0],) if values["channel_gate"] and placement else (),
        "gate_kwargs": {"bn_momentum": values["gate_bn_momentum"]},
        "classifier_init": values["classifier_init"],
    }
