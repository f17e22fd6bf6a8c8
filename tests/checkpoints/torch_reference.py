"""Independent float64 NumPy forward of the released RNL TSM-ResNet50, on torch-layout weights.

Mirrors the PyTorch semantics (docs/fidelity.md sections 1, 3 and 7): frames as (N*T, C, H, W), clips as
(N, C, T, H, W); convolutions as explicit loops over kernel offsets with the torch (O, I, ...)
weights; F_theta as the masked GROUPED conv3d the release stores (not a depthwise shortcut);
inference-mode batch norm (eps 1e-5). Uses no rnl_keras code.
"""
import numpy as np

EPS = 1e-5


def get(sd, key):
    for k in (key, "module.base_model." + key, "module." + key, "base_model." + key):
        if k in sd:
            return np.asarray(sd[k], np.float64)
    raise KeyError(key)


def conv2d(x, w, stride=1, pad=0):
    """x (N, I, H, W), w (O, I, kh, kw): cross-correlation with zero padding ``pad``.

    out[n, o, y, x] = sum_{i, dh, dw} w[o, i, dh, dw] * xpad[n, i, y * s + dh, x * s + dw],
    gathered per kernel offset (im2col) and summed with one matrix product.
    """
    n, _, h, wd = x.shape
    o, i, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))).transpose(0, 2, 3, 1)
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    cols = np.empty((n, ho, wo, kh, kw, i))
    for dh in range(kh):
        for dw in range(kw):
            cols[:, :, :, dh, dw] = xp[:, dh:dh + stride * (ho - 1) + 1:stride,
                                       dw:dw + stride * (wo - 1) + 1:stride]
    weight = w.transpose(2, 3, 1, 0).reshape(kh * kw * i, o)        # rows ordered (dh, dw, i)
    out = cols.reshape(-1, kh * kw * i) @ weight
    return out.reshape(n, ho, wo, o).transpose(0, 3, 1, 2)


def batch_norm(x, sd, prefix):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    g, b = get(sd, prefix + ".weight"), get(sd, prefix + ".bias")
    m, v = get(sd, prefix + ".running_mean"), get(sd, prefix + ".running_var")
    return (x - m.reshape(shape)) / np.sqrt(v.reshape(shape) + EPS) * g.reshape(shape) + b.reshape(shape)


def relu(x):
    return np.maximum(x, 0.0)


def max_pool_3x3_s2(x):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    ho, wo = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1
    out = np.full((n, c, ho, wo), -np.inf)
    for dh in range(3):
        for dw in range(3):
            out = np.maximum(out, xp[:, :, dh:dh + 2 * (ho - 1) + 1:2, dw:dw + 2 * (wo - 1) + 1:2])
    return out


def temporal_shift(x, t, fold_div=8):
    """TSM shift of (N*T, C, H, W) frames: [0, fold) from t+1, [fold, 2 fold) from t-1."""
    nt, c, h, w = x.shape
    x = x.reshape(nt // t, t, c, h, w)
    fold = c // fold_div
    out = np.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.reshape(nt, c, h, w)


def bottleneck(x, sd, p, stride, downsample, t, shift=True):
    out = temporal_shift(x, t) if shift else x
    conv1 = p + (".conv1.net.weight" if shift else ".conv1.weight")
    out = relu(batch_norm(conv2d(out, get(sd, conv1)), sd, p + ".bn1"))
    out = relu(batch_norm(conv2d(out, get(sd, p + ".conv2.weight"), stride, 1), sd, p + ".bn2"))
    out = batch_norm(conv2d(out, get(sd, p + ".conv3.weight")), sd, p + ".bn3")
    identity = x
    if downsample:
        identity = batch_norm(conv2d(x, get(sd, p + ".downsample.0.weight"), stride), sd,
                              p + ".downsample.1")
    return relu(out + identity)


def conv3d_1x1(x, w, b):
    """x (N, C, T, H, W), w (O, C, 1, 1, 1)."""
    return np.einsum("oc,ncthw->nothw", w[:, :, 0, 0, 0], x, optimize=True) + b.reshape(1, -1, 1, 1, 1)


def grouped_conv3d(x, weight, mask):
    """The release's DiagonalwiseRefactorization: conv3d(x, weight * mask, groups, padding (k-1)/2)."""
    n, c, t, h, w = x.shape
    o, per_group, kt, kh, kw = weight.shape
    groups = c // per_group
    wm = weight * mask
    pt, ph, pw = (kt - 1) // 2, (kh - 1) // 2, (kw - 1) // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pt), (ph, ph), (pw, pw)))
    out = np.zeros((n, o, t, h, w))
    out_per_group = o // groups
    for g in range(groups):
        ins = slice(g * per_group, (g + 1) * per_group)
        outs = slice(g * out_per_group, (g + 1) * out_per_group)
        for dt in range(kt):
            for dh in range(kh):
                for dw in range(kw):
                    out[:, outs] += np.einsum("ok,nkthw->nothw", wm[outs, :, dt, dh, dw],
                                              xp[:, ins, dt:dt + t, dh:dh + h, dw:dw + w])
    return out


def channel_gate(x, sd, p):
    n, c = x.shape[:2]
    logits = conv3d_1x1(x, get(sd, p + ".W_k.weight"), get(sd, p + ".W_k.bias")).reshape(n, -1)
    logits = logits - logits.max(axis=1, keepdims=True)
    a = np.exp(logits)
    a /= a.sum(axis=1, keepdims=True)                                      # softmax over THW
    context = np.einsum("ncj,nj->nc", x.reshape(n, c, -1), a)
    h = context @ get(sd, p + ".W_v1.weight").T + get(sd, p + ".W_v1.bias")
    h = relu(batch_norm(h, sd, p + ".bn1"))
    out = h @ get(sd, p + ".W_v2.weight").T + get(sd, p + ".W_v2.bias")
    return x + out[:, :, None, None, None]


def rnl_attention(x, sd, p):
    """f_div_C (N, THW keys, THW queries) and theta_x of the release's RNL block."""
    n = x.shape[0]
    theta = conv3d_1x1(x, get(sd, p + ".theta.weight"), get(sd, p + ".theta.bias"))
    penta = grouped_conv3d(theta, get(sd, p + ".penta.weight"), get(sd, p + ".penta.mask"))
    cp = theta.shape[1]
    pf = penta.reshape(n, cp, -1)
    f = np.einsum("ncj,nci->nji", pf, pf)                                   # (N, keys, queries)
    f = f - f.max(axis=1, keepdims=True)
    f = np.exp(f)
    f /= f.sum(axis=1, keepdims=True)                                       # softmax dim=1
    return f, theta


def rnl_block(x, sd, p):
    n = x.shape[0]
    f, theta = rnl_attention(x, sd, p)
    cp = theta.shape[1]
    y = np.einsum("ncj,nji->nci", theta.reshape(n, cp, -1), f).reshape((n, cp) + x.shape[2:])
    z = batch_norm(conv3d_1x1(y, get(sd, p + ".W.0.weight"), get(sd, p + ".W.0.bias")), sd, p + ".W.1")
    return z + x


def wrapper(x, sd, base, t, gate, rnl):
    """NL3DWrapper after the block: (N*T, C, H, W) -> clip -> cg -> nl -> frames."""
    nt, c, h, w = x.shape
    clip = x.reshape(nt // t, t, c, h, w).transpose(0, 2, 1, 3, 4)
    if gate:
        clip = channel_gate(clip, sd, base + ".cg")
    if rnl:
        clip = rnl_block(clip, sd, base + ".nl")
    return clip.transpose(0, 2, 1, 3, 4).reshape(nt, c, h, w)


STAGES = ((1, 64, 3, 1), (2, 128, 4, 2), (3, 256, 6, 2), (4, 512, 3, 2))


def forward(sd, clip, rnl_blocks=(), gate_blocks=(), return_features=False):
    """Logits (B, K) of the released model for a Keras-layout clip (B, T, H, W, 3)."""
    b, t, h, w, _ = clip.shape
    x = np.asarray(clip, np.float64).transpose(0, 1, 4, 2, 3).reshape(b * t, 3, h, w)
    x = relu(batch_norm(conv2d(x, get(sd, "conv1.weight"), 2, 3), sd, "bn1"))
    x = max_pool_3x3_s2(x)
    features = {}
    for stage, _, blocks, stride in STAGES:
        for index in range(blocks):
            key = (stage, index)
            wrapped = key in rnl_blocks or key in gate_blocks
            base = f"layer{stage}.{index}"
            p = base + ".block" if wrapped else base
            x = bottleneck(x, sd, p, stride if index == 0 else 1, index == 0, t)
            features[f"{base}.block"] = x
            if wrapped:
                x = wrapper(x, sd, base, t, key in gate_blocks, key in rnl_blocks)
            features[base] = x
    pooled = x.mean(axis=(2, 3))                                             # (B*T, 2048)
    logits = pooled @ get(sd, "new_fc.weight").T + get(sd, "new_fc.bias")
    logits = logits.reshape(b, t, -1).mean(axis=1)
    return (logits, features) if return_features else logits
