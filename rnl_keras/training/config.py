"""The training configuration (one dataclass, independent of absl) and its checks.

Every check raises :class:`ConfigError` whose message starts with the command-line flag it is
about (``--batch_size: ...``), so ``pipelines/train.py`` can refuse bad flags before any work.
"""
from __future__ import annotations

import dataclasses
import os

ATTENTIONS = ("none", "nl", "se", "gate", "rnl", "se+rnl")
STRATEGIES = ("default", "mirrored", "multi_worker")
SCHEDULES = ("step", "cosine", "constant")
MIXED_PRECISIONS = ("none", "bfloat16")
# Copies of the layers' own tuples (attention_ops.SIMILARITIES, region_nonlocal.AGGREGATIONS), so
# that flags are checked without importing Keras; tests/training/test_flags.py pins them equal.
RNL_SIMILARITIES = ("gaussian", "dot", "cosine")
RNL_AGGREGATIONS = ("conv", "avg", "max")


class ConfigError(ValueError):
    """A flag value that cannot work; ``flag`` is its name (without dashes)."""

    def __init__(self, flag: str, why: str):
        super().__init__(f"--{flag}: {why}")
        self.flag = flag


@dataclasses.dataclass
class TrainConfig:
    """All the settings of one training run (see ``rnl_keras/training/flags.py`` for each one)."""

    train_list: str
    num_classes: int
    model_dir: str
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
    # model
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
    rnl_fixed_offsets: bool = True
    # optimisation
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
    # runtime
    strategy: str = "default"
    cpu_devices: int = 0
    mixed_precision: str = "none"
    jit_compile: bool = False
    checkpoint_every_steps: int = 500
    keep_checkpoints: int = 3
    log_every_steps: int = 10
    val_every_epochs: int = 1
    val_batch_size: int = 0
    val_max_videos: int = 0
    seed: int = 0
    progress: bool = True

    def block_kwargs(self) -> dict:
        """``rnl_kwargs`` / ``nl_kwargs`` of ``tsm_resnet50`` for these settings."""
        chunk = self.query_chunk_size or None
        rnl = {"similarity": self.rnl_similarity, "aggregation": self.rnl_aggregation,
               "key_subsample": self.key_subsample, "query_chunk_size": chunk,
               "fixed_offsets": self.rnl_fixed_offsets}
        return {"rnl_kwargs": rnl, "nl_kwargs": {"subsample": self.key_subsample,
                                                 "query_chunk_size": chunk}}

    def check(self) -> None:
        """Static range checks (no file system access). Raises ConfigError naming the flag."""
        def positive(name, value=None, strict=True):
            value = getattr(self, name) if value is None else value
            if value is None or (value <= 0 if strict else value < 0):
                raise ConfigError(name, f"must be {'> 0' if strict else '>= 0'}, got {value!r}")

        if self.attention not in ATTENTIONS:
            raise ConfigError("attention", f"unknown attention {self.attention!r}; choose one of "
                              f"{', '.join(ATTENTIONS)}")
        if self.rnl_similarity not in RNL_SIMILARITIES:
            raise ConfigError("rnl_similarity", f"must be one of {RNL_SIMILARITIES}, got "
                              f"{self.rnl_similarity!r}")
        if self.rnl_aggregation not in RNL_AGGREGATIONS:
            raise ConfigError("rnl_aggregation", f"must be one of {RNL_AGGREGATIONS}, got "
                              f"{self.rnl_aggregation!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError("strategy", f"must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError("lr_schedule", f"must be one of {SCHEDULES}")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError("optimizer", f"must be sgd or adam, got {self.optimizer!r}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ConfigError("mixed_precision", f"must be one of {MIXED_PRECISIONS}")
        for name in ("num_classes", "epochs", "batch_size", "grad_accum_steps", "lr",
                     "num_frames", "image_size", "resize_shorter", "reference_batch_size",
                     "lr_decay_epochs", "dense_stride", "fold_div", "log_every_steps",
                     "val_every_epochs", "keep_checkpoints", "shuffle_buffer"):
            positive(name)
        for name in ("weight_decay", "clip_grad_norm", "label_smoothing", "warmup_epochs",
                     "checkpoint_every_steps", "val_batch_size", "val_max_videos", "cpu_devices",
                     "momentum", "query_chunk_size"):
            positive(name, strict=False)
        if self.steps_per_epoch is not None:
            positive("steps_per_epoch")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.lr_decay_factor <= 1.0:
            raise ConfigError("lr_decay_factor", f"must be in (0, 1], got {self.lr_decay_factor}")
        if not 0.0 <= self.warmup_start_factor <= 1.0:
            raise ConfigError("warmup_start_factor", "must be in [0, 1]")
        if self.label_smoothing >= 1.0:
            raise ConfigError("label_smoothing", "must be < 1")
        if self.resize_shorter < self.image_size:
            raise ConfigError("resize_shorter", f"must be >= --image_size ({self.image_size})")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ConfigError("warmup_epochs", f"must be < --epochs ({self.epochs})")
        if self.batch_size % self.grad_accum_steps:
            raise ConfigError("batch_size", f"{self.batch_size} is not divisible by "
                              f"--grad_accum_steps={self.grad_accum_steps}")
        if len(self.stage_blocks) != 4 or min(self.stage_blocks) < 1:
            raise ConfigError("stage_blocks", f"must be 4 positive ints, got {self.stage_blocks}")
        positive("base_width")
        counts = dict(zip(("res2", "res3", "res4", "res5"), self.stage_blocks))
        for stage, index in self.placement if self.attention != "none" else ():
            if stage not in counts or not 0 <= index < counts[stage]:
                raise ConfigError("placement", f"{stage}:{index} is not a block of the backbone "
                                  f"(blocks per stage: {counts})")
        if self.pretrained_weights and (self.stage_blocks != (3, 4, 6, 3) or self.base_width != 64):
            raise ConfigError("pretrained_weights", "ResNet-50 weights need the ResNet-50 "
                              "backbone (--stage_blocks=3,4,6,3 --base_width=64)")
        if self.pretrained_weights and not os.path.isfile(self.pretrained_weights):
            raise ConfigError("pretrained_weights", f"no such file: {self.pretrained_weights}")
        try:
            self.frame_template.format(1)
        except (IndexError, KeyError, ValueError) as err:
            raise ConfigError("frame_template", f"cannot format a frame number ({err})") from None

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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
