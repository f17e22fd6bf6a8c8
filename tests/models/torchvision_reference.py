"""Independent float64 NumPy forward of torchvision's ResNet-50 (v1.5), on its own state dict.

Written from torchvision.models.resnet (eval mode), using no rnl_keras code:

    conv1 7x7/2 pad 3 -> bn1 -> relu -> maxpool 3/2 pad 1
    layer1..4 of Bottleneck(inplanes, planes, stride): conv1 1x1 -> bn1 -> relu ->
        conv2 3x3/stride pad 1 (the stride is HERE in v1.5) -> bn2 -> relu -> conv3 1x1 -> bn3,
        + identity (downsample = conv 1x1/stride -> bn on the first block of a stage), relu
    adaptive average pool -> fc

Frames are NCHW float64; BatchNorm is ``(x - running_mean) / sqrt(running_var + 1e-5) * weight +
bias``; convolutions (im2col matrix products) and the 3x3/2 max-pool are the float64 helpers of
tests/checkpoints/torch_reference.py, the suite's other PyTorch-semantics oracle.
``calibrate=True`` first sets every BN's running statistics from the batch it sees (times a random
factor), so random weights give activations of order 1 and non-trivial ImageNet-like logits.
"""
import numpy as np

from tests.checkpoints.torch_reference import conv2d, max_pool_3x3_s2 as max_pool

EPS = 1e-5
RESNET50_BLOCKS = (3, 4, 6, 3)


class Net:
    """Forward of a state dict; with ``calibrate`` it writes BN statistics into ``sd`` first."""

    def __init__(self, sd, calibrate=False, rng=None):
        self.sd, self.calibrate, self.rng = sd, calibrate, rng

    def w(self, key):
        return np.asarray(self.sd[key], np.float64)

    def bn(self, x, p):
        if self.calibrate:
            c = x.shape[1]
            self.sd[p + ".running_mean"] = (x.mean(axis=(0, 2, 3))
                                            + self.rng.normal(0, 0.05, c)).astype("float32")
            self.sd[p + ".running_var"] = (x.var(axis=(0, 2, 3))
                                           * self.rng.uniform(0.8, 1.25, c)).astype("float32")
        shape = (1, -1, 1, 1)
        scale = self.w(p + ".weight") / np.sqrt(self.w(p + ".running_var") + EPS)
        return ((x - self.w(p + ".running_mean").reshape(shape)) * scale.reshape(shape)
                + self.w(p + ".bias").reshape(shape))

    def bottleneck(self, x, p, stride, downsample):
        out = np.maximum(self.bn(conv2d(x, self.w(p + ".conv1.weight")), p + ".bn1"), 0)
        out = np.maximum(self.bn(conv2d(out, self.w(p + ".conv2.weight"), stride, 1), p + ".bn2"),
                         0)
        out = self.bn(conv2d(out, self.w(p + ".conv3.weight")), p + ".bn3")
        identity = x
        if downsample:
            identity = self.bn(conv2d(x, self.w(p + ".downsample.0.weight"), stride),
                               p + ".downsample.1")
        return np.maximum(out + identity, 0)

    def features(self, x, blocks=RESNET50_BLOCKS):
        """(N, 3, H, W) normalised RGB frames -> (N, C) pooled features."""
        x = np.maximum(self.bn(conv2d(x, self.w("conv1.weight"), 2, 3), "bn1"), 0)
        x = max_pool(x)
        for stage, count in enumerate(blocks, start=1):
            for index in range(count):
                stride = 2 if index == 0 and stage > 1 else 1
                x = self.bottleneck(x, f"layer{stage}.{index}", stride, index == 0)
        return x.mean(axis=(2, 3))

    def logits(self, x, blocks=RESNET50_BLOCKS):
        return self.features(x, blocks) @ self.w("fc.weight").T + self.w("fc.bias")


def random_state_dict(rng, num_classes=1000, blocks=RESNET50_BLOCKS, width=64):
    """A torchvision-layout ResNet state dict with random float32 values (He-scaled convs)."""
    sd = {}

    def conv(key, o, i, k):
        sd[key] = rng.normal(0, np.sqrt(2.0 / (i * k * k)), (o, i, k, k)).astype("float32")

    def bn(p, c, gamma=1.0):
        sd[p + ".weight"] = rng.uniform(0.5, 1.5, c).astype("float32") * gamma
        sd[p + ".bias"] = rng.normal(0, 0.1, c).astype("float32")
        sd[p + ".running_mean"] = rng.normal(0, 0.1, c).astype("float32")
        sd[p + ".running_var"] = rng.uniform(0.5, 2.0, c).astype("float32")
        sd[p + ".num_batches_tracked"] = np.array(100, "int64")

    conv("conv1.weight", width, 3, 7)
    bn("bn1", width)
    inplanes = width
    for stage, count in enumerate(blocks, start=1):
        planes = width * 2 ** (stage - 1)
        for index in range(count):
            p = f"layer{stage}.{index}"
            conv(p + ".conv1.weight", planes, inplanes, 1)
            bn(p + ".bn1", planes)
            conv(p + ".conv2.weight", planes, planes, 3)
            bn(p + ".bn2", planes)
            conv(p + ".conv3.weight", 4 * planes, planes, 1)
            bn(p + ".bn3", 4 * planes, gamma=0.3)
            if index == 0:
                conv(p + ".downsample.0.weight", 4 * planes, inplanes, 1)
                bn(p + ".downsample.1", 4 * planes)
            inplanes = 4 * planes
    sd["fc.weight"] = rng.normal(0, 0.05, (num_classes, inplanes)).astype("float32")
    sd["fc.bias"] = rng.normal(0, 0.1, num_classes).astype("float32")
    return sd


def calibrated_state_dict(rng, frames, num_classes=1000, blocks=RESNET50_BLOCKS, width=64,
                          logit_std=3.0):
    """:func:`random_state_dict` with BN statistics from ``frames`` and the classifier scaled so
    the logits on ``frames`` have standard deviation ``logit_std``."""
    sd = random_state_dict(rng, num_classes, blocks, width)
    Net(sd, calibrate=True, rng=rng).features(frames, blocks)
    logits = Net(sd).logits(frames, blocks)
    scale = logit_std / logits.std()
    sd["fc.weight"] = (sd["fc.weight"] * scale).astype("float32")
    sd["fc.bias"] = (sd["fc.bias"] * scale).astype("float32")
    return sd


def normalise_uint8(frames_u8, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
    """torchvision's ToTensor + Normalize of (N, H, W, 3) uint8 frames -> (N, 3, H, W) float64."""
    x = np.asarray(frames_u8, np.float64) / 255.0
    x = (x - np.asarray(mean)) / np.asarray(std)
    return x.transpose(0, 3, 1, 2)
