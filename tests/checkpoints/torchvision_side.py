"""Run with a Python that has torch + torchvision (NOT the project venv); used by
torchvision_parity_check.py (see there).

    $TORCH_PYTHON tests/checkpoints/torchvision_side.py OUT_DIR

Builds ``torchvision.models.resnet50(weights=None)``, gives it random weights and BatchNorm
statistics calibrated on random uint8 frames (so the logits are of order 1), and writes to OUT_DIR:
``resnet50.pth`` (torch.save of the state dict, zip format), ``resnet50_legacy.pth`` (the pre-1.6
format), ``state_dict.npz`` (the same tensors via ``.numpy()``: ground truth for the safe reader)
and ``frames_logits.npz`` (uint8 frames (N, 224, 224, 3) and torchvision's eval-mode logits on
ToTensor + Normalize of them).
"""
import os
import sys

import numpy as np
import torch
import torchvision

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main(out):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = torchvision.transforms.functional.normalize(x, MEAN, STD)
    model = torchvision.models.resnet50(weights=None)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.momentum = None                      # cumulative average: batch stats
        model.train()
        model(x)                                            # running stats from these frames
        model.fc.weight.normal_(0, 0.05)
        model.fc.bias.normal_(0, 0.1)
        model.eval()
        logits = model(x).numpy()
    state = model.state_dict()
    torch.save(state, os.path.join(out, "resnet50.pth"))
    torch.save(state, os.path.join(out, "resnet50_legacy.pth"), _use_new_zipfile_serialization=False)
    np.savez(os.path.join(out, "state_dict.npz"), **{k: v.numpy() for k, v in state.items()})
    np.savez(os.path.join(out, "frames_logits.npz"), frames=frames, logits=logits)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}: logits std "
          f"{logits.std():.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
