"""absl flags of ``pipelines/train.py`` and their checks.

Every flag is defined here (so ``--helpfull`` lists them under this module) and turned into a
:class:`rnl_keras.training.config.TrainConfig` by :func:`config_from_flags`. Problems that can be
found before any work starts raise :class:`absl.app.UsageError` naming the flag.
"""
from __future__ import annotations


from absl import app, flags

from rnl_keras.training.config import (ATTENTIONS, MIXED_PRECISIONS, RNL_AGGREGATIONS,
                                       RNL_SIMILARITIES, SCHEDULES, STRATEGIES,
                                       TrainConfig)

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
flags.DEFINE_boolean("shift", True, "TSM temporal shift in every bottleneck (false: per-frame "
                     "TSN baseline without temporal modelling).")
flags.DEFINE_integer("fold_div", 8, "TSM shifts 2/fold_div of the channels.")
flags.DEFINE_float("dropout", 0.5, "Dropout before the classifier.")
flags.DEFINE_enum("resnet_variant", "keras", ["keras", "torchvision"], "Where ResNet-50 strides: "
                  "keras (matches keras.applications weights) or torchvision (matches TSM).")
flags.DEFINE_string("pretrained_weights", None, "Local keras.applications ResNet-50 ImageNet "
                    "weights file loaded into the backbone (the paper starts from ImageNet).")
flags.DEFINE_list("stage_blocks", ["3", "4", "6", "3"], "Bottlenecks in res2,res3,res4,res5 "
                  "(ResNet-50: 3,4,6,3). Smaller values give a small TSM-ResNet (CPU demos).")
flags.DEFINE_integer("base_width", 64, "Width of res2's bottleneck (ResNet-50: 64); the stages "
                     "double it.")
flags.DEFINE_list("placement", ["res3:0", "res3:2", "res4:0", "res4:2", "res4:4"],
                  "Where the attention blocks go: stage:block (0-based) after which a block is "
                  "inserted (the paper's 5: res3:0,res3:2,res4:0,res4:2,res4:4).")
flags.DEFINE_enum("rnl_similarity", "gaussian", list(RNL_SIMILARITIES), "RNL similarity f: "
                  "gaussian (softmax, eq. 5), dot (eq. 6) or cosine (eq. 7).")
flags.DEFINE_enum("rnl_aggregation", "conv", list(RNL_AGGREGATIONS), "RNL region summary "
                  "F_theta: channel-wise conv, avg or max pooling (Table II).")
flags.DEFINE_boolean("key_subsample", False, "1x2x2 max-pool the keys and values of the RNL / NL "
                     "blocks (about 4x less attention arithmetic and memory).")
flags.DEFINE_integer("query_chunk_size", 0, "Bounded attention memory: RNL / NL attention in "
                     "blocks of at most this many query rows, in training too (the backward "
                     "recomputes each block instead of keeping it); same result. 0: off.")
flags.DEFINE_boolean("rnl_fixed_offsets", True, "Gaussian RNL, float32: one exp per attention "
                     "block where the clips' |p|^2 spread allows it (exact; checked per batch by "
                     "a cond, an IF op in TFLite). false: always the running-max softmax.")
flags.DEFINE_boolean("channel_gate", False, "Add the authors' released GCNet-style channel gate "
                     "before the attention block after res3[0].")

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
flags.DEFINE_float("weight_decay", 5e-4, "L2 weight decay on conv / dense kernels only "
                   "(BatchNorm and biases are excluded), added to the loss like PyTorch SGD.")
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


def _require(cond, flag, why):
    if not cond:
        raise app.UsageError(f"--{flag}: {why}")


def _parse_ints(values, flag):
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise app.UsageError(f"--{flag}: expected comma-separated integers, got "
                             f"{','.join(values)!r}") from None


def _parse_placement(values):
    out = []
    for item in values:
        stage, _, index = item.partition(":")
        if not stage or not index.strip().isdigit():
            raise app.UsageError(f"--placement: {item!r} is not stage:block (e.g. res3:0)")
        out.append((stage.strip(), int(index)))
    return tuple(out)


def config_from_flags(flag_values=FLAGS) -> TrainConfig:
    """Build the TrainConfig, raising ``app.UsageError`` naming the flag for values out of range."""
    f = flag_values
    _require(f.train_list, "train_list", "is required (a list file or shard glob)")
    _require(f.model_dir, "model_dir", "is required")
    _require(f.num_classes is not None, "num_classes", "is required")
    cfg = TrainConfig(
        data_source=f.data_source, train_list=f.train_list, val_list=f.val_list or None,
        data_root=f.data_root, val_root=f.val_root if f.val_root is not None else f.data_root,
        classes_file=f.classes_file, frame_template=f.frame_template, num_classes=f.num_classes,
        num_frames=f.num_frames, image_size=f.image_size, resize_shorter=f.resize_shorter,
        sampling=f.sampling, dense_stride=f.dense_stride, flip=f.flip,
        on_bad_sample=f.on_bad_sample, num_parallel_calls=f.num_parallel_calls,
        deterministic_data=f.deterministic_data, shuffle_buffer=f.shuffle_buffer,
        attention=f.attention, shift=f.shift, fold_div=f.fold_div, dropout=f.dropout,
        resnet_variant=f.resnet_variant, pretrained_weights=f.pretrained_weights,
        channel_gate=f.channel_gate, stage_blocks=_parse_ints(f.stage_blocks, "stage_blocks"),
        base_width=f.base_width, placement=_parse_placement(f.placement),
        rnl_similarity=f.rnl_similarity, rnl_aggregation=f.rnl_aggregation,
        key_subsample=f.key_subsample, query_chunk_size=f.query_chunk_size,
        rnl_fixed_offsets=f.rnl_fixed_offsets,
        epochs=f.epochs, steps_per_epoch=f.steps_per_epoch,
        batch_size=f.batch_size, grad_accum_steps=f.grad_accum_steps, lr=f.lr,
        scale_lr_with_replicas=f.scale_lr_with_replicas,
        reference_batch_size=f.reference_batch_size, lr_schedule=f.lr_schedule,
        lr_decay_epochs=f.lr_decay_epochs, lr_decay_factor=f.lr_decay_factor,
        warmup_epochs=f.warmup_epochs, warmup_start_factor=f.warmup_start_factor,
        optimizer=f.optimizer, momentum=f.momentum, nesterov=f.nesterov, weight_decay=f.weight_decay,
        clip_grad_norm=f.clip_grad_norm, label_smoothing=f.label_smoothing,
        strategy=f.strategy, cpu_devices=f.cpu_devices, mixed_precision=f.mixed_precision,
        jit_compile=f.jit_compile, model_dir=f.model_dir,
        checkpoint_every_steps=f.checkpoint_every_steps, keep_checkpoints=f.keep_checkpoints,
        log_every_steps=f.log_every_steps, val_every_epochs=f.val_every_epochs,
        val_batch_size=f.val_batch_size, val_max_videos=f.val_max_videos, seed=f.seed,
        progress=f.progress)
    try:
        cfg.check()
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    return cfg
