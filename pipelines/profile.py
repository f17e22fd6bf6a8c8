"""Parameters and multiply-adds of (RNL) TSM-ResNet models, counted from the built models.

By default the paper's TSM-ResNet50 (Table I); ``--stage_blocks`` / ``--base_width`` count a
smaller TSM-ResNet, named as such in the output (``rnl_keras.models.spec.architecture_name``).

    python pipelines/profile.py --attention=all --num_frames=8 --image_size=224 --num_classes=400
    python pipelines/profile.py --attention=rnl --key_subsample --json=out.json
    python pipelines/profile.py --attention=rnl --rnl_kernel_sizes=res3:1x1x1,res4:1x1x1
    python pipelines/profile.py --attention=se+rnl --se_reduction=2

The model / ablation flags are the trainer's (``rnl_keras/training/model_flags.py``): a model
profiled here is the model ``pipelines/train.py`` builds from the same flags.

Columns (GMACs per clip, 1 multiply-add = 2 FLOPs):
  paper    the convention of the paper's Table III (conv / linear / BN only, attention products and
           F_theta not counted); "Table III" and "diff" compare it with the published figure.
  true     everything: plus the attention products (2 N_q N_k C' per RNL / NL block), F_theta's
           channel-wise conv and the SE / gate pooling products.
  executed what rnl_keras actually computes: the Gaussian RNL without key sub-sampling builds only
           half of S = P P^T (rnl_keras.layers.attention symmetric path).
Parameters: trainable, and total (with BN moving statistics). The paper's RNL count (35.48M)
includes the release's grouped F_theta weight and its 0/1 mask; ours is the same function stored
as a true depthwise kernel (docs/fidelity.md 6.1), so it is ~7.3M lower.

The backbone defaults to the paper's (torchvision ResNet-50, stride in the 3x3 conv, no conv
biases); ``--resnet_variant=keras`` counts the Keras-weights layout (stride in the 1x1 conv, ~5.7%
fewer MACs).
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from rnl_keras.models.spec import (TABLE_I, architecture_name, attention_label,  # noqa: E402
                                   blocks_of, placement_of)
from rnl_keras.models.tsm_resnet import ATTENTIONS  # noqa: E402
from rnl_keras.profiling.macs import TABLE_III, profile_models  # noqa: E402
from rnl_keras.training.config import model_kwargs  # noqa: E402
from rnl_keras.training.model_flags import (MODEL_FLAGS, define_model_flags,  # noqa: E402
                                            model_values)

# Own FlagValues: this module is imported beside the trainer's flags (tests), whose names overlap.
FLAGS = flags.FlagValues()
flags.DEFINE_string("attention", "all", f"one of {ATTENTIONS} or 'all' (comma-separated lists "
                    "too)", flag_values=FLAGS)
flags.DEFINE_integer("num_frames", 8, "frames per clip T", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("image_size", 224, "square input size", lower_bound=32, flag_values=FLAGS)
flags.DEFINE_integer("num_classes", 400, "classifier outputs", lower_bound=1, flag_values=FLAGS)
define_model_flags(FLAGS, resnet_variant="torchvision")   # the paper's backbone by default
flags.DEFINE_alias("rnl_key_subsample", "key_subsample", flag_values=FLAGS)   # the old name
flags.DEFINE_bool("use_conv_bias", False,
                  "conv biases as in Keras' ResNet50 (the paper's backbone has none)",
                  flag_values=FLAGS)
flags.DEFINE_string("json", None, "write the results to this JSON file", flag_values=FLAGS)

_FLAG_NAMES = ("attention", "num_frames", "image_size", "num_classes") + MODEL_FLAGS + (
    "use_conv_bias", "json")
# The model of Table III: the flags whose values change the counts it compares with.
_PAPER_MODEL = {"resnet_variant": "torchvision", "stage_blocks": blocks_of(TABLE_I),
                "base_width": TABLE_I.stem.width, "placement": placement_of(TABLE_I),
                "rnl_kernel_sizes": (), "se_reduction": 16,
                "channel_gate": False, "rnl_aggregation": "conv"}


def parse_args(argv=None):
    """Parse ``argv`` (without the program name; default ``sys.argv[1:]``); returns FLAGS."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--help" in argv or "--helpfull" in argv:
        print(__doc__)
        print(FLAGS.get_help())
        raise SystemExit(0)
    FLAGS.unparse_flags()
    try:
        FLAGS([sys.argv[0]] + argv)
    except flags.Error as err:
        raise SystemExit(f"profile.py: {err}") from None
    return FLAGS


def format_table(results, table_iii_comparable, num_blocks=len(placement_of(TABLE_I))):
    """The table of ``results`` ({attention: counts}); rows are named "baseline" or as the
    paper's Table III ("+5 RNL"), with ``num_blocks`` attention blocks."""
    header = (f"{'model':<18} {'params M':>9} {'(total)':>9} | {'paper GMACs':>11} "
              f"{'Table III':>9} {'diff':>7} | {'true GMACs':>10} {'executed':>9} "
              f"{'attn prod':>9}")
    lines = [header, "-" * len(header)]
    for attention, r in results.items():
        ref = TABLE_III.get(attention) if table_iii_comparable else None
        paper = r["paper"] / 1e9
        ref_s = f"{ref[0]:9.2f}" if ref else f"{'-':>9}"
        diff_s = f"{100 * (paper / ref[0] - 1):+6.2f}%" if ref else f"{'-':>7}"
        lines.append(
            f"{attention_label(attention, num_blocks):<18} "
            f"{r['params']['trainable'] / 1e6:9.2f} "
            f"{r['params']['total'] / 1e6:9.2f} | {paper:11.2f} {ref_s} {diff_s} | "
            f"{r['true'] / 1e9:10.2f} {r['executed'] / 1e9:9.2f} {r['attention'] / 1e9:9.2f}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    config = {name: FLAGS[name].value for name in _FLAG_NAMES}
    if args.attention == "all":
        attentions = ["none", "se", "gate", "nl", "rnl", "se+rnl"]
    else:
        attentions = [a.strip() for a in args.attention.split(",")]
    for a in attentions:
        if a not in ATTENTIONS:
            raise SystemExit(f"--attention: {a!r} is not one of {ATTENTIONS} or 'all'")
    try:
        values = model_values(args, attentions=attentions)
    except app.UsageError as err:
        raise SystemExit(f"profile.py: {err}") from None
    kwargs = model_kwargs(values)
    results = profile_models(attentions, num_frames=args.num_frames, image_size=args.image_size,
                             num_classes=args.num_classes, use_conv_bias=args.use_conv_bias,
                             **kwargs)
    comparable = (args.num_frames, args.image_size, args.num_classes) == (8, 224, 400) and \
        all(values[k] == v for k, v in _PAPER_MODEL.items())
    print(f"{architecture_name(**kwargs)}: per clip of "
          f"{args.num_frames}x{args.image_size}x{args.image_size}, "
          f"{args.num_classes} classes, backbone {args.resnet_variant}"
          f"{' + conv bias' if args.use_conv_bias else ''}; RNL {kwargs['rnl_kwargs']}, "
          f"regions {kwargs['rnl_kernel_sizes'] or 'res3 3x7x7, res4 3x3x3'}; NL "
          f"{kwargs['nl_kwargs']}; SE r={kwargs['se_reduction']}")
    print("GMACs = 1e9 multiply-adds (= the paper's 'GFLOPs'; 2 FLOPs each)")
    print(format_table(results, comparable, len(set(kwargs["placement"]))))
    print("paper: conv/linear/BN only (Table III convention); true: + attention products, "
          "F_theta, pooling products; executed: true minus the half of P P^T the symmetric "
          "Gaussian RNL path skips")
    if args.json:
        payload = {"config": config, "units": {"macs": "multiply-adds per clip",
                                                   "params": "count"},
                   "models": {a: {**r, "table_iii": TABLE_III.get(a) if comparable else None}
                              for a, r in results.items()}}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
