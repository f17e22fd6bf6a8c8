"""Parameters and multiply-adds of the (RNL) TSM-ResNet50 models, counted from the built models.

    python pipelines/profile.py --attention=all --num_frames=8 --image_size=224 --num_classes=400
    python pipelines/profile.py --attention=rnl --rnl_key_subsample --json=out.json

Columns (GMACs per clip, 1 multiply-add = 2 FLOPs):
  paper    the convention of the paper's Table III (conv / linear / BN only, attention products and
           F_theta not counted); "Table III" and "diff" compare it with the published figure.
  true     everything: plus the attention products (2 N_q N_k C' per RNL / NL block), F_theta's
           channel-wise conv and the SE / gate pooling products.
  executed what rnl_keras actually computes: the Gaussian RNL without key sub-sampling builds only
           half of S = P P^T (attention_ops symmetric path).
Parameters: trainable, and total (with BN moving statistics). The paper's RNL count (35.48M)
includes the release's grouped F_theta weight and its 0/1 mask; ours is the same function stored
as a true depthwise kernel (FACTS.md section 2), so it is ~7.3M lower.

The backbone defaults to the paper's (torchvision ResNet-50, stride in the 3x3 conv, no conv
biases); ``--resnet_variant=keras`` counts the Keras-weights layout (stride in the 1x1 conv, ~5.7%
fewer MACs).
"""
import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rnl_keras.models.tsm_resnet import ATTENTIONS  # noqa: E402
from rnl_keras.profiling.macs import TABLE_III, profile_models  # noqa: E402

NAMES = {"none": "baseline TSM-R50", "nl": "+5 NL", "rnl": "+5 RNL", "se+rnl": "+5 SE+RNL",
         "se": "+5 SE", "gate": "+5 GC"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attention", default="all",
                        help=f"one of {ATTENTIONS} or 'all' (comma-separated lists too)")
    parser.add_argument("--num_frames", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--num_classes", type=int, default=400)
    parser.add_argument("--rnl_key_subsample", action="store_true",
                        help="RNL with 1x2x2 max-pooled keys and values")
    parser.add_argument("--nl_subsample", action="store_true",
                        help="NL with 1x2x2 max-pooled phi and g")
    parser.add_argument("--rnl_similarity", default="gaussian", choices=("gaussian", "dot", "cosine"))
    parser.add_argument("--rnl_aggregation", default="conv", choices=("conv", "avg", "max"))
    parser.add_argument("--resnet_variant", default="torchvision", choices=("torchvision", "keras"))
    parser.add_argument("--use_conv_bias", action="store_true",
                        help="conv biases as in Keras' ResNet50 (the paper's backbone has none)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    return parser.parse_args(argv)


def format_table(results, table_iii_comparable):
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
            f"{NAMES.get(attention, attention):<18} {r['params']['trainable'] / 1e6:9.2f} "
            f"{r['params']['total'] / 1e6:9.2f} | {paper:11.2f} {ref_s} {diff_s} | "
            f"{r['true'] / 1e9:10.2f} {r['executed'] / 1e9:9.2f} {r['attention'] / 1e9:9.2f}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.attention == "all":
        attentions = ["none", "se", "gate", "nl", "rnl", "se+rnl"]
    else:
        attentions = [a.strip() for a in args.attention.split(",")]
    for a in attentions:
        if a not in ATTENTIONS:
            raise SystemExit(f"--attention: {a!r} is not one of {ATTENTIONS} or 'all'")
    rnl_kwargs = {"key_subsample": args.rnl_key_subsample, "similarity": args.rnl_similarity,
                  "aggregation": args.rnl_aggregation}
    nl_kwargs = {"subsample": args.nl_subsample}
    results = profile_models(attentions, num_frames=args.num_frames, image_size=args.image_size,
                             num_classes=args.num_classes, rnl_kwargs=rnl_kwargs,
                             nl_kwargs=nl_kwargs, resnet_variant=args.resnet_variant,
                             use_conv_bias=args.use_conv_bias)
    comparable = (args.num_frames, args.image_size, args.num_classes) == (8, 224, 400) and \
        args.resnet_variant == "torchvision"
    print(f"Per clip of {args.num_frames}x{args.image_size}x{args.image_size}, "
          f"{args.num_classes} classes, backbone {args.resnet_variant}"
          f"{' + conv bias' if args.use_conv_bias else ''}; RNL {rnl_kwargs}; NL {nl_kwargs}")
    print("GMACs = 1e9 multiply-adds (= the paper's 'GFLOPs'; 2 FLOPs each)")
    print(format_table(results, comparable))
    print("paper: conv/linear/BN only (Table III convention); true: + attention products, "
          "F_theta, pooling products; executed: true minus the half of P P^T the symmetric "
          "Gaussian RNL path skips")
    if args.json:
        payload = {"config": vars(args), "units": {"macs": "multiply-adds per clip",
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
