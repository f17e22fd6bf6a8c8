"""absl flags of ``pipelines/train.py`` and their checks.

Every flag is defined here (the model / ablation flags by ``model_flags.define_model_flags``,
shared with ``pipelines/profile.py``) and turned into a
:class:`rnl_keras.training.config.TrainConfig` by :func:`config_from_flags` (every config field is
read from the flag of the same name). Problems that can be found before any work starts raise
:class:`absl.app.UsageError` naming the flag.
"""
from __future__ import annotations

import dataclasses

from absl import app, flags

from rnl_keras.training import model_flags
from rnl_keras.training.config import (ATTENTIONS, MIXED_PRECISIONS, PARAM_GROUPS, SCHEDULES,
                                       SECTIONS, STRATEGIES, TrainConfig)

FLAGS = flags.FLAGS

# --- data ---------------------------------------------------------------------------------------
flags.DEFINE_enum("data_source", "video", ["video", "frames", "tfrecord"],
                  "Input format: video files (list lines '<path> <label>'), frame folders (TSM "
                  "lines '<folder> <num_frames> <label>') or prepared TFRecord shards.")
flags.DEFINE_string("train_list", None, "Training list file (or TFRecord shard glob). Required.")
flags.DEFINE_string("val_list", None, "Validation list file (or shard glob); empty: no validation.")
flags.DEFINE_string("data_root", "", "Directory the paths of --train_list are relative to.")
flags.DEFINE_string("val_root", None, "Directory the paths of --val_list are relative to "
                    "(default: --data_root).")
flags.DEFINE_string("classes_file", None, "Class names, one a line; if it exists its line count "
                    "must equal --num_classes. Copied to <model_dir>/classes.txt.")
flags.DEFINE_string("frame_template", "img_{:05d}.jpg", "File name template of frame folders "
                    "(SSv1: '{:05d}.jpg').")
flags.DEFINE_integer("num_classes", None, "Number of classes K; every label must be < K. Required.")
flags.DEFINE_integer("num_frames", 8, "Frames per clip T (TSN segments).")
flags.DEFINE_integer("image_size", 224, "Training / validation crop size.")
flags.DEFINE_integer("resize_shorter", 256, "Shorter side at validation (and decode cap).")
flags.DEFINE_enum("sampling", "tsn", ["tsn", "dense"], "Frame sampling: TSN segments or dense "
                  "(--dense_stride apart in a random window; Kinetics option).")
flags.DEFINE_integer("dense_stride", 8, "Frame stride of dense sampling.")
flags.DEFINE_boolean("flip", True, "Random horizontal flip at training (off for "
                     "Something-Something: its labels contain left/right).")
flags.DEFINE_enum("on_bad_sample", "skip", ["skip", "raise"], "Undecodable clips: log, count and "
                  "skip them, or stop training.")
flags.DEFINE_integer("num_parallel_calls", -1, "Parallel decode calls (-1: AUTOTUNE).")
flags.DEFINE_boolean("deterministic_data", True, "Fixed element order of the input pipeline, so a "
                     "resumed epoch skips exactly the clips already trained on.")
flags.DEFINE_integer("shuffle_buffer", 1024, "Shuffle buffer of the training set.")

# --- model --------------------------------------------------------------------------------------
flags.DEFINE_string("attention", "rnl", f"Attention blocks at the 5 paper positions: one of "
                    f"{'|'.join(ATTENTIONS)}.")
flags.DEFINE_float("dropout", 0.5, "Dropout before the classifier.")
# The ablation / backbone flags shared with pipelines/profile.py (training/model_flags.py).
model_flags.define_model_flags(FLAGS, resnet_variant="keras")
flags.DEFINE_string("pretrained_weights", None, "The ImageNet start of the backbone: a torchvision "
                    "ResNet-50 state dict (.pth, read safely without running pickled code, or "
                    ".npz of its arrays; with --resnet_variant=torchvision: the paper's and the "
                    "release's start), a keras.applications ResNet-50 weights file (.h5, with "
                    "--resnet_variant=keras), 'imagenet' (keras.applications' download: needs "
                    "network) or 'none' (random initialisation, said explicitly). Recorded with "
                    "its sha256 in summary.json.")
flags.DEFINE_boolean("trust_pickled_code", False, "DANGEROUS: let the .pth weights loader "
                     "unpickle arbitrary Python objects (torch.load(weights_only=False)), which "
                     "runs any code the file contains. Only for old checkpoints from a source you "
                     "trust completely; the default refuses such files.")
flags.DEFINE_boolean("sync_bn", False, "Synchronised BatchNorm under --strategy=mirrored / "
                     "multi_worker (Keras BatchNormalization(synchronized=True): batch statistics "
                     "over the global batch, as the release's SyncBatchNorm); one replica: same "
                     "as plain BatchNorm.")
flags.DEFINE_string("recipe", "", "Name of the recipe (set by each configs/*.flags, e.g. "
                    "k400_paper). A *_paper / *_released recipe is refused without "
                    "--pretrained_weights (say --pretrained_weights=none to start from random "
                    "initialisation on purpose).")

# --- optimisation ------------------------------------------------------------------------------
flags.DEFINE_integer("epochs", 50, "Training epochs.")
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: training videos // "
                     "--batch_size).")
flags.DEFINE_integer("batch_size", 64, "GLOBAL batch size (all replicas, all workers); must be "
                     "divisible by the number of replicas x --grad_accum_steps.")
flags.DEFINE_integer("grad_accum_steps", 1, "Split each replica's batch into this many micro-"
                     "batches and sum their gradients before one update (large batches on few "
                     "devices; BatchNorm sees micro-batch statistics).")
flags.DEFINE_float("lr", 0.01, "Base learning rate (for --reference_batch_size clips).")
flags.DEFINE_boolean("scale_lr_with_replicas", False, "Linear scaling rule: lr x batch_size / "
                     "reference_batch_size.")
flags.DEFINE_integer("reference_batch_size", 64, "Batch size --lr is meant for (linear scaling).")
flags.DEFINE_enum("lr_schedule", "step", list(SCHEDULES), "step: x --lr_decay_factor every "
                  "--lr_decay_epochs epochs; cosine: linear warm-up then cosine to 0; constant.")
flags.DEFINE_integer("lr_decay_epochs", 20, "Step schedule: epochs between decays.")
flags.DEFINE_float("lr_decay_factor", 0.1, "Step schedule: factor applied at each decay.")
flags.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up from --warmup_start_factor x lr "
                   "(per step), both schedules.")
flags.DEFINE_float("warmup_start_factor", 0.1, "Warm-up starts at this fraction of the lr.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam"], "SGD with momentum (the paper's "
                  "recipes) or Adam (the CPU demo: a small network from scratch).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum (Adam: beta_1).")
flags.DEFINE_boolean("nesterov", False, "Nesterov momentum.")
flags.DEFINE_float("weight_decay", 5e-4, "L2 weight decay (PyTorch SGD's coupled decay). "
                   "--param_groups=uniform: on conv / dense kernels only (BatchNorm and biases "
                   "excluded); release: x each group's decay multiplier.")
flags.DEFINE_enum("param_groups", "uniform", list(PARAM_GROUPS), "Per-parameter learning rates "
                  "and decay. uniform: one lr for all, decay on kernels. release: the authors' "
                  "release (TSM's get_optim_policies): conv / dense weights x1 lr with decay, "
                  "their biases x2 without; BatchNorm x1 without; classifier fc weight x5 with "
                  "decay, bias x10 without; inside RNL / NL blocks weights x1 with decay, biases "
                  "x2 without, with the release's quirks (F_theta x2 without decay, the block's "
                  "BN gamma x1 with decay). SGD only. The table is printed at start and written "
                  "to <model_dir>/param_groups.json.")
flags.DEFINE_float("clip_grad_norm", 20.0, "Clip the global gradient norm (TSM: 20); 0: off.")
flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of the cross-entropy.")

# --- runtime -----------------------------------------------------------------------------------
flags.DEFINE_enum("strategy", "default", list(STRATEGIES), "default (one device), mirrored (all "
                  "local GPUs, or --cpu_devices logical CPUs) or multi_worker (reads TF_CONFIG).")
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (tests / "
                     "mirrored on CPU); 0: leave as is.")
flags.DEFINE_enum("mixed_precision", "none", list(MIXED_PRECISIONS), "bfloat16: Keras "
                  "'mixed_bfloat16' policy (variables float32, compute bfloat16).")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the train step (slow on CPU: keep off).")
flags.DEFINE_string("model_dir", None, "Output directory: ckpt/, tb/, best.keras, final.keras, "
                    "summary.json, classes.txt. Required.")
flags.DEFINE_integer("checkpoint_every_steps", 500, "Save a checkpoint every N global steps "
                     "(and at every epoch end); 0: epoch ends only.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept in <model_dir>/ckpt.")
flags.DEFINE_integer("log_every_steps", 10, "TensorBoard scalars every N steps.")
flags.DEFINE_integer("val_every_epochs", 1, "Validate every N epochs (and after the last).")
flags.DEFINE_integer("val_batch_size", 0, "Validation batch size per worker (0: the per-replica "
                     "training batch size).")
flags.DEFINE_integer("val_max_videos", 0, "Validate on the first N videos only (0: all).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling and augmentation.")
flags.DEFINE_boolean("progress", True, "Show a Keras progress bar per epoch (chief only).")
flags.DEFINE_float("peer_timeout_s", 600.0, "Multi-worker: a worker that waits this long for "
                   "its peers (starting the cluster, a step, a save) stops naming them.")
flags.DEFINE_string("data_service", "", "grpc://HOST:PORT of a tf.data service dispatcher "
                    "(pipelines/data_service.py): TFRecord shards are decoded, sampled and "
                    "augmented on its workers, the trainer only batches (--data_source=tfrecord).")
flags.DEFINE_float("data_service_timeout_s", 300.0, "--data_service: stop (exit 1) when no "
                   "batch arrives for this long, e.g. after a worker holding part of the pass "
                   "was lost; the message names the step, the dispatcher and the lost worker(s) "
                   "(asked of the dispatcher and probed: at most ~7 s more), or says why they "
                   "could not be learned.")


def _require(cond, flag, why):
    if not cond:
        raise app.UsageError(f"--{flag}: {why}")


def _flat_values(f) -> dict:
    """{field: value} of every TrainConfig field from the parsed flags (same names)."""
    values = {}
    for cls in SECTIONS.values():
        for field in dataclasses.fields(cls):
            if field.name not in model_flags.MODEL_FLAGS:
                values[field.name] = getattr(f, field.name)
    values.update(model_flags.model_values(f))
    # Flags whose empty value means "none" / "the default of another flag".
    values["val_list"] = f.val_list or None
    values["val_root"] = f.val_root if f.val_root is not None else f.data_root
    values["pretrained_weights"] = f.pretrained_weights or None
    return values


def config_from_flags(flag_values=FLAGS, check_files: bool = True) -> TrainConfig:
    """Build the TrainConfig, raising ``app.UsageError`` naming the flag for values out of range
    (and, with ``check_files``, for a ``--pretrained_weights`` file that does not exist)."""
    f = flag_values
    _require(f.train_list, "train_list", "is required (a list file or shard glob)")
    _require(f.model_dir, "model_dir", "is required")
    _require(f.num_classes is not None, "num_classes", "is required")
    cfg = TrainConfig(**_flat_values(f))
    try:
        cfg.check()
        if check_files:
            cfg.check_files()
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    return cfg
