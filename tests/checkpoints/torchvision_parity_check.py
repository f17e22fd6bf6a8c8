"""tsm_resnet50(weights=<torchvision .pth>) == torchvision's own ResNet-50, on real torch files.

Not part of the pytest suite (PyTorch is not a dependency of the project and must not enter its
venv). Run it by hand with a second interpreter that has torch + torchvision:

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch torchvision numpy
    .venv/bin/python tests/checkpoints/torchvision_parity_check.py /tmp/tv/bin/python

torchvision_side.py builds torchvision.models.resnet50(weights=None) with random weights, saves
its state dict with torch.save in both formats (zip and legacy) and its eval-mode logits on
ToTensor + Normalize of random uint8 frames. This side checks that the safe reader
(rnl_keras.checkpoints.read_torch_file, no torch) returns exactly torch's tensors for both files,
builds ``tsm_resnet50(1000, resnet_variant="torchvision", weights=<.pth>)`` (one frame per clip,
no shift, no attention) and compares its logits on the pipeline's normalisation of the same
frames. Prints the figures; exit status 0 when max |keras - torch| / max |torch| < 1e-4.
"""
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from rnl_keras.imagenet import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from rnl_keras.checkpoints import load_torch_state_dict  # noqa: E402
from rnl_keras.models import tsm_resnet50  # noqa: E402
from tests.checkpoints.torch_side_runner import load_arrays, run_torch_side  # noqa: E402


def main(torch_python):
    with tempfile.TemporaryDirectory() as out:
        print(run_torch_side(torch_python, "torchvision_side.py", out).strip())
        truth = load_arrays(os.path.join(out, "state_dict.npz"))
        for name in ("resnet50.pth", "resnet50_legacy.pth"):
            read = load_torch_state_dict(os.path.join(out, name))
            same = (sorted(read) == sorted(truth)
                    and all(read[k].dtype == truth[k].dtype and np.array_equal(read[k], truth[k])
                            for k in truth))
            print(f"safe reader on {name}: {len(read)} tensors, identical to torch's: {same}")
            if not same:
                sys.exit(1)
        arrays = load_arrays(os.path.join(out, "frames_logits.npz"))
        frames, expected = arrays["frames"], arrays["logits"]
        model = tsm_resnet50(1000, num_frames=1, image_size=224, attention="none", shift=False,
                             resnet_variant="torchvision",
                             weights=os.path.join(out, "resnet50.pth"))
    clip = (frames.astype(np.float32) / 255.0 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    logits = np.asarray(model(clip[:, None].astype(np.float32), training=False))
    error = np.max(np.abs(logits - expected)) / np.max(np.abs(expected))
    probs = [np.exp(v - v.max(-1, keepdims=True)) for v in (logits, expected)]
    probs = [p / p.sum(-1, keepdims=True) for p in probs]
    print(f"logits: max |keras - torch| / max |torch| = {error:.2e}; max |prob diff| = "
          f"{np.abs(probs[0] - probs[1]).max():.2e}; top-1 agree "
          f"{np.mean(logits.argmax(-1) == expected.argmax(-1)):.2f}")
    sys.exit(0 if error < 1e-4 else 1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
