"""The model (ablation) flags shared by ``pipelines/train.py`` and ``pipelines/profile.py``.

Both programs define these flags with :func:`define_model_flags` (on their own ``FlagValues``)
and turn them into the fields of the config's model section
(:class:`rnl_keras.training.config.ModelConfig`) with :func:`model_values`, so every ablation of
the paper is reachable the same way from both:

* ``--rnl_kernel_sizes``: the region size of F_theta per stage (Table II(a); ``1x1x1`` is its
  first row, i.e. no region),
* ``--rnl_similarity`` / ``--rnl_aggregation``: eqs. (5)-(7) and Table II(b)-(c),
* ``--key_subsample`` (RNL) and ``--nl_subsample`` (the NL baseline), separately,
* ``--se_reduction``: eq. (11) writes W1 as C -> C/2 (r = 2); Table III's "+5 SE" and SE+RNL
  parameter counts are those of r = 16 (docs/fidelity.md),
* ``--channel_gate`` / ``--gate_bn_momentum``: the authors' released GCNet-style channel gate,
* the backbone's shape (``--resnet_variant``, ``--stage_blocks``, ``--base_width``,
  ``--placement``) and the TSM shift.

Values that cannot work raise :class:`absl.app.UsageError` naming the flag. This module does not
import Keras or TensorFlow.
"""
from __future__ import annotations

from absl import app, flags

from rnl_keras.training.config import (RNL_AGGREGATIONS, RNL_SIMILARITIES, STAGES, ConfigError,
                                       check_model_values)

# Names of the flags defined here, in the order of the ModelConfig fields they fill.
MODEL_FLAGS = ("shift", "fold_div", "resnet_variant", "stage_blocks", "base_width", "placement",
               "rnl_similarity", "rnl_aggregation", "rnl_kernel_sizes", "key_subsample",
               "nl_subsample", "query_chunk_size", "se_reduction",
               "channel_gate", "gate_bn_momentum", "classifier_init")


def define_model_flags(flag_values=flags.FLAGS, resnet_variant="keras") -> None:
    """Define the model flags on ``flag_values`` (``resnet_variant``: its default)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_boolean("shift", True, "TSM temporal shift in every bottleneck (false: per-frame "
                         "TSN baseline without temporal modelling).", **fv)
    flags.DEFINE_integer("fold_div", 8, "TSM shifts 2/fold_div of the channels.", **fv)
    flags.DEFINE_enum("resnet_variant", resnet_variant, ["keras", "torchvision"], "Where "
                      "ResNet-50 strides: torchvision (v1.5, stride in the 3x3 conv, no conv "
                      "biases: the paper's, TSM's and the release's backbone; takes torchvision "
                      "ImageNet weights) or keras (v1, stride in the first 1x1 conv, conv biases: "
                      "takes keras.applications weights).", **fv)
    flags.DEFINE_list("stage_blocks", ["3", "4", "6", "3"], "Bottlenecks in res2,res3,res4,res5 "
                      "(ResNet-50: 3,4,6,3). Smaller values give a small TSM-ResNet (CPU demos).",
                      **fv)
    flags.DEFINE_integer("base_width", 64, "Width of res2's bottleneck (ResNet-50: 64); the "
                         "stages double it.", **fv)
    flags.DEFINE_list("placement", ["res3:0", "res3:2", "res4:0", "res4:2", "res4:4"],
                      "Where the attention blocks go: stage:block (0-based) after which a block "
                      "is inserted (the paper's 5: res3:0,res3:2,res4:0,res4:2,res4:4).", **fv)
    flags.DEFINE_enum("rnl_similarity", "gaussian", list(RNL_SIMILARITIES), "RNL similarity f: "
                      "gaussian (softmax, eq. 5), dot (eq. 6) or cosine (eq. 7).", **fv)
    flags.DEFINE_enum("rnl_aggregation", "conv", list(RNL_AGGREGATIONS), "RNL region summary "
                      "F_theta: channel-wise conv, avg or max pooling (Table II(b)).", **fv)
    flags.DEFINE_list("rnl_kernel_sizes", [], "Region size (kt x kh x kw, odd) of F_theta per "
                      "stage, e.g. res3:3x7x7,res4:3x3x3 (the paper's, also the default for "
                      "stages not named). 1x1x1 is Table II(a)'s first row (no region: F_theta "
                      "is a per-channel scale, or the identity for avg / max pooling).", **fv)
    flags.DEFINE_boolean("key_subsample", False, "RNL only: 1x2x2 max-pool its keys and values "
                         "(about 4x less attention arithmetic and memory; the release has none). "
                         "The NL baseline has its own --nl_subsample.", **fv)
    flags.DEFINE_boolean("nl_subsample", False, "NL baseline (--attention=nl) only: 1x2x2 "
                         "max-pool phi and g, as in the NL paper's sub-sampled variant.", **fv)
    flags.DEFINE_integer("query_chunk_size", 0, "Bounded attention memory: RNL / NL attention "
                         "in blocks of at most this many query rows; same result. 0: the layers' "
                         "default blocks (the Gaussian RNL still never holds the N x N matrix "
                         "and recomputes its blocks in the backward).", **fv)
    flags.DEFINE_integer("se_reduction", 16, "Reduction r of the SE blocks (--attention=se, the "
                         "SE of se+rnl, and gate): W1 maps C -> C/r. Eq. (11) of the paper writes "
                         "C/2 (r=2); its Table III parameter counts are those of r=16 (default).",
                         **fv)
    flags.DEFINE_boolean("channel_gate", False, "Add the authors' released GCNet-style channel "
                         "gate (reduction 2) before the attention block at the first "
                         "--placement (the release: res3[0]).", **fv)
    flags.DEFINE_float("gate_bn_momentum", 0.99, "Keras momentum of the --channel_gate's "
                       "BatchNorm: 0.99 is the release's (PyTorch BatchNorm1d momentum=0.01); "
                       "0.9 is PyTorch's default 0.1.", **fv)
    flags.DEFINE_enum("classifier_init", "release", ["release", "glorot"], "Initialisation of "
                      "the classifier: release (N(0, 0.001), the release's and TSM's, for a head "
                      "on ImageNet features) or glorot (from-scratch training with Adam, as the "
                      "CPU demo: there the tiny head slows learning far down).", **fv)


def parse_ints(values, flag):
    """Comma-separated integers of a list flag, as a tuple."""
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise app.UsageError(f"--{flag}: expected comma-separated integers, got "
                             f"{','.join(values)!r}") from None


def parse_placement(values):
    """``res3:0,res4:2`` -> ((stage, block), ...)."""
    out = []
    for item in values:
        stage, _, index = item.partition(":")
        if not stage or not index.strip().isdigit():
            raise app.UsageError(f"--placement: {item!r} is not stage:block (e.g. res3:0)")
        out.append((stage.strip(), int(index)))
    return tuple(out)


def parse_kernel_sizes(values):
    """``res3:3x7x7,res4:3x3x3`` -> (("res3", (3, 7, 7)), ("res4", (3, 3, 3))).

    Raises UsageError naming ``--rnl_kernel_sizes`` for an unknown or repeated stage, or a size
    that is not three odd positive integers.
    """
    out, seen = [], set()
    for item in values:
        stage, sep, size = (part.strip() for part in item.partition(":"))
        if not sep or stage not in STAGES:
            raise app.UsageError(f"--rnl_kernel_sizes: {item!r} is not stage:KTxKHxKW with stage "
                                 f"one of {', '.join(STAGES)} (e.g. res3:3x7x7)")
        if stage in seen:
            raise app.UsageError(f"--rnl_kernel_sizes: stage {stage} is given twice")
        seen.add(stage)
        parts = size.lower().split("x")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise app.UsageError(f"--rnl_kernel_sizes: {item!r}: the size must be three "
                                 f"integers KTxKHxKW (e.g. 3x7x7), got {size!r}")
        out.append((stage, tuple(int(p) for p in parts)))
    return tuple(out)


def model_values(flag_values=flags.FLAGS, attentions=None) -> dict:
    """The ModelConfig fields of these flags, from parsed flags, checked.

    Args:
        flag_values: parsed ``FlagValues`` holding the flags of :func:`define_model_flags`.
        attentions: the attention kinds that will be built (for the checks that depend on it,
            e.g. a --rnl_kernel_sizes stage without an RNL block); default ``--attention``.
    Returns:
        {ModelConfig field: value}.
    Raises:
        app.UsageError naming the flag.
    """
    f = flag_values
    values = {name: getattr(f, name) for name in MODEL_FLAGS}
    values["stage_blocks"] = parse_ints(f.stage_blocks, "stage_blocks")
    values["placement"] = parse_placement(f.placement)
    values["rnl_kernel_sizes"] = parse_kernel_sizes(f.rnl_kernel_sizes)
    if attentions is None:
        attentions = (f.attention,)
    try:
        for attention in attentions:
            check_model_values({**values, "attention": attention})
    except ConfigError as err:
        raise app.UsageError(str(err)) from None
    return values
