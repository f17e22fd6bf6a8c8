"""Logits of the converted model == a real PyTorch model of the released layout.

Not part of the pytest suite (PyTorch is not a dependency of the project and must not enter its
venv). Run it by hand with a second interpreter that has torch + torchvision:

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch torchvision numpy
    .venv/bin/python tests/checkpoints/torch_parity_check.py /tmp/tv/bin/python

It runs torch_side.py there: real torch modules load the test state dict with strict=True, save a
TSM-style .pth.tar, compute eval-mode logits and read the file back with
rnl_keras.checkpoints.load_torch_state_dict; this side converts and compares. Exit status 0 and
the relative error are printed on success.
"""
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from rnl_keras.checkpoints import from_torch_state_dict  # noqa: E402
from tests.checkpoints.torch_side_runner import load_arrays, run_torch_side  # noqa: E402


def main(torch_python):
    with tempfile.TemporaryDirectory() as out:
        run_torch_side(torch_python, "torch_side.py", out)
        state_dict = load_arrays(os.path.join(out, "state_dict.npz"))
        arrays = load_arrays(os.path.join(out, "clip_logits.npz"))
        clip, expected = arrays["clip"], arrays["logits"]
    model = from_torch_state_dict(state_dict, num_frames=clip.shape[1], image_size=clip.shape[2])
    logits = model(clip, training=False).numpy()
    error = np.max(np.abs(logits - expected)) / np.max(np.abs(expected))
    print(f"max |keras - torch| / max |torch| = {error:.2e}")
    sys.exit(0 if error < 1e-4 else 1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
