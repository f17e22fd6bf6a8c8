"""A random state dict in the key layout of the authors' released RNL TSM-ResNet50 checkpoints.

Written from docs/fidelity.md section 7 and torchvision's ResNet-50 structure, independently of
rnl_keras.checkpoints: the tests compare the converter against this, not against itself.
"""
import numpy as np

# torchvision ResNet-50: (torch stage, planes, blocks)
STAGES = ((1, 64, 3), (2, 128, 4), (3, 256, 6), (4, 512, 3))
# released: (torch stage, block) -> F_theta kernel; the channel gate sits at layer2.0
RNL_BLOCKS = {(2, 0): (3, 7, 7), (2, 2): (3, 7, 7), (3, 0): (3, 3, 3), (3, 2): (3, 3, 3),
              (3, 4): (3, 3, 3)}
GATE_BLOCKS = {(2, 0)}


def _bn(sd, prefix, c, rng, gamma=(0.5, 1.0)):
    sd[f"{prefix}.weight"] = rng.uniform(*gamma, c)
    sd[f"{prefix}.bias"] = rng.normal(0, 0.1, c)
    sd[f"{prefix}.running_mean"] = rng.normal(0, 0.1, c)
    sd[f"{prefix}.running_var"] = rng.uniform(0.5, 1.5, c)
    sd[f"{prefix}.num_batches_tracked"] = np.array(1000, np.int64)


def _he(rng, shape, scale=1.0):
    fan_in = int(np.prod(shape[1:]))
    return rng.normal(0, scale * np.sqrt(2.0 / fan_in), shape)


def penta_mask(channels, kernel):
    groups = max(channels // 32, 1)
    per_group = channels // groups
    mask = np.zeros((channels, per_group) + tuple(kernel))
    for i in range(channels):
        mask[i, i % per_group] = 1.0
    return mask


def make_released_state_dict(rng, num_classes=10, attention=True, prefix="module.",
                             shift=True, theta_scale=0.15):
    """{key: float32 array} for RNL TSM-ResNet50 (``attention=False``: plain TSM-ResNet50)."""
    sd = {}
    sd["conv1.weight"] = _he(rng, (64, 3, 7, 7))
    _bn(sd, "bn1", 64, rng)
    inplanes = 64
    for stage, planes, blocks in STAGES:
        for index in range(blocks):
            wrapped = attention and ((stage, index) in RNL_BLOCKS or (stage, index) in GATE_BLOCKS)
            p = f"layer{stage}.{index}" + (".block" if wrapped else "")
            cin = inplanes if index == 0 else planes * 4
            sd[f"{p}.conv1{'.net' if shift else ''}.weight"] = _he(rng, (planes, cin, 1, 1))
            _bn(sd, f"{p}.bn1", planes, rng)
            sd[f"{p}.conv2.weight"] = _he(rng, (planes, planes, 3, 3))
            _bn(sd, f"{p}.bn2", planes, rng)
            sd[f"{p}.conv3.weight"] = _he(rng, (planes * 4, planes, 1, 1))
            _bn(sd, f"{p}.bn3", planes * 4, rng, gamma=(0.2, 0.5))
            if index == 0:
                sd[f"{p}.downsample.0.weight"] = _he(rng, (planes * 4, cin, 1, 1))
                _bn(sd, f"{p}.downsample.1", planes * 4, rng)
            if not attention:
                continue
            c = planes * 4
            base = f"layer{stage}.{index}"
            if (stage, index) in GATE_BLOCKS:
                g = f"{base}.cg"
                sd[f"{g}.W_k.weight"] = rng.normal(0, 1 / np.sqrt(c), (1, c, 1, 1, 1))
                sd[f"{g}.W_k.bias"] = rng.normal(0, 0.1, (1,))
                sd[f"{g}.W_v1.weight"] = rng.normal(0, 1 / np.sqrt(c), (c // 2, c))
                sd[f"{g}.W_v1.bias"] = rng.normal(0, 0.1, (c // 2,))
                _bn(sd, f"{g}.bn1", c // 2, rng)
                sd[f"{g}.W_v2.weight"] = rng.normal(0, 1 / np.sqrt(c), (c, c // 2))
                sd[f"{g}.W_v2.bias"] = rng.normal(0, 0.1, (c,))
            if (stage, index) in RNL_BLOCKS:
                n = f"{base}.nl"
                kernel = RNL_BLOCKS[(stage, index)]
                sd[f"{n}.theta.weight"] = rng.normal(0, theta_scale / np.sqrt(c),
                                                     (c // 2, c, 1, 1, 1))
                sd[f"{n}.theta.bias"] = rng.normal(0, 0.1, (c // 2,))
                mask = penta_mask(c // 2, kernel)
                # as trained: the masked-off entries are whatever; only the diagonal is used
                sd[f"{n}.penta.weight"] = rng.normal(0, 1 / np.sqrt(np.prod(kernel)), mask.shape)
                sd[f"{n}.penta.mask"] = mask
                sd[f"{n}.W.0.weight"] = rng.normal(0, 1 / np.sqrt(c // 2), (c, c // 2, 1, 1, 1))
                sd[f"{n}.W.0.bias"] = rng.normal(0, 0.1, (c,))
                _bn(sd, f"{n}.W.1", c, rng, gamma=(0.2, 0.5))
        inplanes = planes * 4
    out = {}
    for key, value in sd.items():
        value = np.asarray(value)
        if value.dtype.kind == "f":
            value = value.astype(np.float32)
        out[f"{prefix}base_model.{key}" if prefix is not None else key] = value
    fc_prefix = f"{prefix}new_fc" if prefix is not None else "new_fc"
    out[f"{fc_prefix}.weight"] = rng.normal(0, 0.01, (num_classes, 2048)).astype(np.float32)
    out[f"{fc_prefix}.bias"] = rng.normal(0, 0.01, (num_classes,)).astype(np.float32)
    return out
