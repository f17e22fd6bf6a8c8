"""The output of a non-local block: z = BN(y W_z + b_z) + x (paper eq. (8)).

In training (with a trainable BatchNorm) this is computed as written: BN needs the batch
statistics of y W_z. Otherwise BN is an affine map per channel with its moving statistics and is
folded into W_z,

    z = y (W_z * s) + ((b_z - mean) * s + beta) + x,      s = gamma / sqrt(var + eps),

one GEMM, a bias and the residual add: the same numbers up to float32 rounding, without the two
full-size (B, T, H, W, C) tensors that the separate conv output and BN output would hold. At res3
of a batch of 4 clips each of those is 51 MB, which is what bounds the block's peak memory once
the attention is chunked.
"""
from keras import ops


def _folded(dense, bn, dtype):
    """(kernel, bias) of BN(y W + b) with BN's moving statistics, float32 math, cast to dtype."""
    kernel = ops.cast(dense.kernel, "float32")
    bias = ops.cast(dense.bias, "float32") if dense.bias is not None else 0.0
    scale = ops.rsqrt(ops.cast(bn.moving_variance, "float32") + bn.epsilon)
    if bn.scale:
        scale = scale * ops.cast(bn.gamma, "float32")
    shift = (bias - ops.cast(bn.moving_mean, "float32")) * scale
    if bn.center:
        shift = shift + ops.cast(bn.beta, "float32")
    return ops.cast(kernel * scale, dtype), ops.cast(shift, dtype)


def project_and_add(y, dense, bn, x, training=None):
    """BN(dense(y)) + x for y (B, N, C') and x (B, T, H, W, C) with N = T * H * W.

    ``dense`` is a built Dense(C) layer (W_z), ``bn`` a built BatchNormalization over its output.
    """
    if training and bn.trainable:
        y = ops.reshape(y, tuple(ops.shape(x)[:-1]) + (y.shape[-1],))
        return bn(dense(y), training=True) + x
    kernel, shift = _folded(dense, bn, y.dtype)
    z = ops.matmul(ops.reshape(y, (-1, y.shape[-1])), kernel) + shift
    return ops.reshape(z, ops.shape(x)) + x
