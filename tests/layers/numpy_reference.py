"""Independent float64 NumPy implementations of the paper's equations, for the layer tests.

Written from the paper (eqs. (1)-(12)) and the release's formulas (docs/fidelity.md), not from
rnl_keras: loops over kernel offsets with explicit padding, plain softmax, inference-mode batch
norm.
"""
import numpy as np


def dense(x, kernel, bias=None):
    y = np.asarray(x, np.float64) @ np.asarray(kernel, np.float64)
    return y if bias is None else y + bias


def batch_norm(x, gamma, beta, mean, var, eps):
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def region_conv(v, kernel):
    """Channel-wise 3D conv, stride 1, zero padding (k-1)/2: eq. (3) with u_k = kernel."""
    kt, kh, kw, _ = kernel.shape
    b, t, h, w, c = v.shape
    pt, ph, pw = (kt - 1) // 2, (kh - 1) // 2, (kw - 1) // 2
    padded = np.zeros((b, t + 2 * pt, h + 2 * ph, w + 2 * pw, c))
    padded[:, pt:pt + t, ph:ph + h, pw:pw + w] = v
    out = np.zeros_like(v, dtype=np.float64)
    for dt in range(kt):
        for dh in range(kh):
            for dw in range(kw):
                out += kernel[dt, dh, dw] * padded[:, dt:dt + t, dh:dh + h, dw:dw + w]
    return out


def region_avg(v, size):
    """Average pooling counting the zero padding (PyTorch AvgPool3d(k, 1, k//2))."""
    kernel = np.full(tuple(size) + (v.shape[-1],), 1.0 / np.prod(size))
    return region_conv(v, kernel)


def region_max(v, size):
    """Max pooling, stride 1, padding (k-1)/2 with -inf (PyTorch MaxPool3d(k, 1, k//2))."""
    kt, kh, kw = size
    b, t, h, w, c = v.shape
    pt, ph, pw = (kt - 1) // 2, (kh - 1) // 2, (kw - 1) // 2
    padded = np.full((b, t + 2 * pt, h + 2 * ph, w + 2 * pw, c), -np.inf)
    padded[:, pt:pt + t, ph:ph + h, pw:pw + w] = v
    out = np.full(v.shape, -np.inf)
    for dt in range(kt):
        for dh in range(kh):
            for dw in range(kw):
                out = np.maximum(out, padded[:, dt:dt + t, dh:dh + h, dw:dw + w])
    return out


def max_pool_1x2x2(x):
    b, t, h, w, c = x.shape
    x = x[:, :, :h // 2 * 2, :w // 2 * 2]
    return x.reshape(b, t, h // 2, 2, w // 2, 2, c).max(axis=(3, 5))


def softmax(s):
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def pairwise_weights(q, k, similarity):
    """w_ij of eqs. (5)-(7) with their normalisation C(x): (B, Nq, Nk)."""
    if similarity == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
        k = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
    s = np.einsum("bic,bjc->bij", q, k)
    if similarity == "gaussian":
        return softmax(s)
    if similarity == "dot":
        return s / k.shape[1]
    return np.maximum(s, 0.0) / k.shape[1]


def rnl_block(x, w, similarity, aggregation, kernel_size, key_subsample=False, eps=1e-5):
    """z = BN(y W_z) + x, y = f(F(xW_g), F(xW_g)) xW_g / C(x)   (eqs. (3)-(9))."""
    x = np.asarray(x, np.float64)
    v = dense(x, w["theta_kernel"], w["theta_bias"])
    if aggregation == "conv":
        p = region_conv(v, w["f_theta_kernel"])
    elif aggregation == "avg":
        p = region_avg(v, kernel_size)
    else:
        p = region_max(v, kernel_size)
    keys, values = (max_pool_1x2x2(p), max_pool_1x2x2(v)) if key_subsample else (p, v)
    b, c2 = x.shape[0], v.shape[-1]
    a = pairwise_weights(p.reshape(b, -1, c2), keys.reshape(b, -1, c2), similarity)
    y = (a @ values.reshape(b, -1, c2)).reshape(v.shape)
    z = batch_norm(dense(y, w["w_z_kernel"], w["w_z_bias"]), w["bn_gamma"], w["bn_beta"],
                   w["bn_mean"], w["bn_var"], eps)
    return z + x, a


def nl_block(x, w, subsample=False, eps=1e-5):
    """Embedded-Gaussian non-local block (eq. (1)) with W + BN residual."""
    x = np.asarray(x, np.float64)
    theta = dense(x, w["theta_kernel"], w["theta_bias"])
    phi = dense(x, w["phi_kernel"], w["phi_bias"])
    g = dense(x, w["g_kernel"], w["g_bias"])
    if subsample:
        phi, g = max_pool_1x2x2(phi), max_pool_1x2x2(g)
    b, c2 = x.shape[0], theta.shape[-1]
    a = softmax(np.einsum("bic,bjc->bij", theta.reshape(b, -1, c2), phi.reshape(b, -1, c2)))
    y = (a @ g.reshape(b, -1, c2)).reshape(theta.shape)
    z = batch_norm(dense(y, w["w_kernel"], w["w_bias"]), w["bn_gamma"], w["bn_beta"],
                   w["bn_mean"], w["bn_var"], eps)
    return z + x, a


def se_add(x, w, eps=1e-5):
    """Eqs. (10)-(12): v = x + W2 ReLU(BN(W1 mean(x)))."""
    x = np.asarray(x, np.float64)
    s = x.mean(axis=(1, 2, 3))
    h = batch_norm(s @ w["w1_kernel"], w["bn_gamma"], w["bn_beta"], w["bn_mean"], w["bn_var"], eps)
    s = np.maximum(h, 0) @ w["w2_kernel"]
    return x + s[:, None, None, None, :]


def se_scale(x, w):
    """Original SE: v = x * sigmoid(W2 ReLU(W1 mean(x) + b1) + b2)."""
    x = np.asarray(x, np.float64)
    s = x.mean(axis=(1, 2, 3))
    h = np.maximum(s @ w["w1_kernel"] + w["w1_bias"], 0)
    gate = 1.0 / (1.0 + np.exp(-(h @ w["w2_kernel"] + w["w2_bias"])))
    return x * gate[:, None, None, None, :]


def channel_gate(x, w, eps=1e-5):
    """GCNet-style gate of the release: attention pooling, W_v1, BN, ReLU, W_v2, add."""
    x = np.asarray(x, np.float64)
    b, c = x.shape[0], x.shape[-1]
    flat = x.reshape(b, -1, c)
    a = softmax((flat @ w["w_k_kernel"] + w["w_k_bias"])[..., 0])
    context = np.einsum("bn,bnc->bc", a, flat)
    h = batch_norm(context @ w["w_v1_kernel"] + w["w_v1_bias"], w["bn1_gamma"], w["bn1_beta"],
                   w["bn1_mean"], w["bn1_var"], eps)
    out = np.maximum(h, 0) @ w["w_v2_kernel"] + w["w_v2_bias"]
    return x + out[:, None, None, None, :]


def temporal_shift(x, fold_div=8):
    """TSM: channels [0,f) from frame t+1, [f,2f) from frame t-1, zeros at the ends."""
    x = np.asarray(x, np.float64)
    out = x.copy()
    t, f = x.shape[1], x.shape[-1] // fold_div
    for i in range(t):
        out[:, i, ..., :f] = x[:, i + 1, ..., :f] if i + 1 < t else 0.0
        out[:, i, ..., f:2 * f] = x[:, i - 1, ..., f:2 * f] if i >= 1 else 0.0
    return out
