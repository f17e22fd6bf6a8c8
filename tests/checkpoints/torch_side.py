"""Run with a Python that has torch + torchvision (NOT the project venv); used by
torch_parity_check.py (see there).

    $RNL_TORCH_PYTHON tests/checkpoints/torch_side.py OUT_DIR

Builds the released RNL TSM-ResNet50 as PyTorch modules (torchvision ResNet-50, TSM's shift
wrapping conv1 as ``.net``, the NL wrapper with ``.block`` / ``.cg`` / ``.nl``, written from
docs/fidelity.md section 7), loads the random state dict of released_layout.py with ``strict=True`` (so
the key layout the tests use is exactly what such modules produce), saves it as a TSM-style
``.pth.tar`` ({"epoch", "arch", "state_dict"} with the DataParallel ``module.`` prefix), runs an
eval-mode forward on a random clip, then reads the file back with
``rnl_keras.checkpoints.load_torch_state_dict`` and writes OUT_DIR/state_dict.npz,
OUT_DIR/clip_logits.npz.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tests.checkpoints.released_layout import GATE_BLOCKS, RNL_BLOCKS, make_released_state_dict  # noqa: E402

T, SIZE, CLASSES = 4, 64, 7


class TemporalShift(nn.Module):
    def __init__(self, net, n_segment, fold_div=8):
        super().__init__()
        self.net, self.n_segment, self.fold_div = net, n_segment, fold_div

    def forward(self, x):
        nt, c, h, w = x.shape
        x = x.view(nt // self.n_segment, self.n_segment, c, h, w)
        fold = c // self.fold_div
        out = torch.zeros_like(x)
        out[:, :-1, :fold] = x[:, 1:, :fold]
        out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
        out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
        return self.net(out.view(nt, c, h, w))


class ChannelGate(nn.Module):
    def __init__(self, c, r=2):
        super().__init__()
        self.W_k = nn.Conv3d(c, 1, 1)
        self.W_v1 = nn.Linear(c, c // r)
        self.bn1 = nn.BatchNorm1d(c // r)
        self.W_v2 = nn.Linear(c // r, c)

    def forward(self, x):
        n, c = x.shape[:2]
        a = F.softmax(self.W_k(x).view(n, -1, 1), dim=1)
        context = torch.matmul(x.reshape(n, c, -1), a).view(n, c)
        out = self.W_v2(F.relu(self.bn1(self.W_v1(context).unsqueeze(2)).squeeze(2)))
        return x + out[:, :, None, None, None]


class Penta(nn.Module):
    def __init__(self, c, ks):
        super().__init__()
        groups = max(c // 32, 1)
        self.groups, self.pad = groups, [(k - 1) // 2 for k in ks]
        self.weight = nn.Parameter(torch.zeros(c, c // groups, *ks))
        self.mask = nn.Parameter(torch.zeros(c, c // groups, *ks), requires_grad=False)

    def forward(self, x):
        return F.conv3d(x, self.weight * self.mask, None, 1, self.pad, 1, self.groups)


class RNL(nn.Module):
    def __init__(self, c, ks):
        super().__init__()
        self.theta = nn.Conv3d(c, c // 2, 1)
        self.penta = Penta(c // 2, ks)
        self.W = nn.Sequential(nn.Conv3d(c // 2, c, 1), nn.BatchNorm3d(c))

    def forward(self, x):
        n, c2 = x.shape[0], x.shape[1] // 2
        theta = self.theta(x)
        p = self.penta(theta).view(n, c2, -1)
        f = F.softmax(torch.matmul(p.transpose(1, 2), p), dim=1)        # (N, keys, queries)
        y = torch.matmul(theta.view(n, c2, -1), f).view(n, c2, *x.shape[2:])
        return self.W(y) + x


class Wrapper(nn.Module):
    def __init__(self, block, n_segment, gate, ks):
        super().__init__()
        self.block, self.n_segment = block, n_segment
        c = block.bn3.num_features
        if gate:
            self.cg = ChannelGate(c)
        if ks is not None:
            self.nl = RNL(c, ks)

    def forward(self, x):
        x = self.block(x)
        nt, c, h, w = x.shape
        x = x.view(nt // self.n_segment, self.n_segment, c, h, w).transpose(1, 2)
        if hasattr(self, "cg"):
            x = self.cg(x)
        if hasattr(self, "nl"):
            x = self.nl(x)
        return x.transpose(1, 2).contiguous().view(nt, c, h, w)


class TSN(nn.Module):
    def __init__(self, num_classes, n_segment):
        super().__init__()
        base = torchvision.models.resnet50(weights=None)
        for stage in (1, 2, 3, 4):
            layer = getattr(base, f"layer{stage}")
            for block in layer:
                block.conv1 = TemporalShift(block.conv1, n_segment)
            blocks = list(layer)
            for index, block in enumerate(blocks):
                key = (stage, index)
                if key in RNL_BLOCKS or key in GATE_BLOCKS:
                    blocks[index] = Wrapper(block, n_segment, key in GATE_BLOCKS,
                                            RNL_BLOCKS.get(key))
            setattr(base, f"layer{stage}", nn.Sequential(*blocks))
        base.fc = nn.Dropout(0.5)
        self.base_model, self.new_fc, self.n_segment = base, nn.Linear(2048, num_classes), n_segment

    def forward(self, x):                       # x (B, T, 3, H, W)
        out = self.new_fc(self.base_model(x.view((-1, 3) + x.shape[-2:])))
        return out.view(-1, self.n_segment, out.shape[-1]).mean(1)


def main(out_dir):
    from rnl_keras.checkpoints import load_torch_state_dict   # numpy-only module import

    rng = np.random.default_rng(11)
    sd = make_released_state_dict(rng, num_classes=CLASSES, prefix="")
    model = TSN(CLASSES, T)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    model.load_state_dict(tensors, strict=True)             # the layout matches real modules
    model.eval()
    clip = rng.normal(0, 1, (1, T, SIZE, SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(clip).permute(0, 1, 4, 2, 3).contiguous()).numpy()
    state = {"module." + k: v for k, v in model.state_dict().items()}
    path = os.path.join(out_dir, "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment4_e1.pth.tar")
    torch.save({"epoch": 1, "arch": "resnet50", "state_dict": state, "best_prec1": 0.0}, path)
    arrays = load_torch_state_dict(path, warn=lambda m: print(m, file=sys.stderr))
    assert len(arrays) == len(state) and all(k.startswith("module.") for k in arrays)
    np.savez(os.path.join(out_dir, "state_dict.npz"), **arrays)
    np.savez(os.path.join(out_dir, "clip_logits.npz"), clip=clip, logits=logits)
    print(f"torch {torch.__version__}: {len(arrays)} keys, logits {logits.tolist()}")


if __name__ == "__main__":
    main(sys.argv[1])
