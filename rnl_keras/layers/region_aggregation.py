"""F_theta of the RNL block: the region summary theta(N_i) of eq. (3), stride 1, "same" padding.

Three implementations (paper Section III-C, Table II (c)):

* ``"conv"``: channel-wise (depthwise) 3D convolution, one kt x kh x kw filter per channel, no bias.
  Written as a sum of kt depthwise 2D convolutions over time-shifted frames: exact, fast on CPU
  and made of TFLite builtins (``Conv3D(groups=C)`` is neither, FACTS.md section 4).
* ``"avg"``: 3D average pooling with zero padding counted in the divisor (PyTorch's
  ``AvgPool3d(k, 1, k // 2)``, ``count_include_pad=True``), i.e. the same depthwise convolution with
  a fixed uniform kernel.
* ``"max"``: 3D max pooling with padding ignored (PyTorch's ``MaxPool3d(k, 1, k // 2)``).
"""
from keras import ops


def _shift_time(y, offset, num_frames):
    """out[:, t] = y[:, t + offset], zero where t + offset falls outside [0, T)."""
    if offset == 0:
        return y
    if abs(offset) >= num_frames:
        return ops.zeros_like(y)
    zeros = ops.zeros_like(y[:, :abs(offset)])
    if offset > 0:
        return ops.concatenate([y[:, offset:], zeros], axis=1)
    return ops.concatenate([zeros, y[:, :offset]], axis=1)


def depthwise_conv3d(x, kernel):
    """Channel-wise 3D convolution, stride 1, symmetric zero padding (k - 1) / 2.

    x: (B, T, H, W, C); kernel: (kt, kh, kw, C), all kernel sizes odd. Returns (B, T, H, W, C) with
    out[b, t, h, w, c] = sum_{dt, dh, dw} kernel[dt, dh, dw, c] * x[b, t + dt - pt, h + dh - ph, w + dw - pw, c].
    """
    kt = kernel.shape[0]
    num_frames = x.shape[1]
    if num_frames is None:
        raise ValueError("depthwise_conv3d needs a static number of frames T (axis 1)")
    shape = ops.shape(x)
    frames = ops.reshape(x, (-1,) + tuple(shape[2:]))
    out = None
    for dt in range(kt):
        k2d = ops.expand_dims(kernel[dt], -1)  # (kh, kw, C, 1)
        y = ops.depthwise_conv(frames, k2d, strides=1, padding="same")
        y = ops.reshape(y, shape)
        y = _shift_time(y, dt - (kt - 1) // 2, num_frames)
        out = y if out is None else out + y
    return out


def max_pool3d(x, pool_size):
    """3D max pooling, stride 1, padding (k - 1) / 2 that never wins (PyTorch ``MaxPool3d``)."""
    kt, kh, kw = pool_size
    shape = ops.shape(x)
    num_frames = x.shape[1]
    frames = ops.reshape(x, (-1,) + tuple(shape[2:]))
    y = ops.reshape(ops.max_pool(frames, (kh, kw), strides=1, padding="same"), shape)
    pt = (kt - 1) // 2
    if pt == 0:
        return y
    # Replicating the edge frames is the same as ignoring the padding for a max.
    padded = ops.concatenate([y[:, :1]] * pt + [y] + [y[:, -1:]] * pt, axis=1)
    out = padded[:, 0:num_frames]
    for dt in range(1, kt):
        out = ops.maximum(out, padded[:, dt:dt + num_frames])
    return out
