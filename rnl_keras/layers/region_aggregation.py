"""F_theta of the RNL block: the region summary theta(N_i) of eq. (3), stride 1, "same" padding.

Three implementations (paper Section III-C, Table II (c)):

* ``"conv"``: channel-wise (depthwise) 3D convolution, one kt x kh x kw filter per channel, no bias.
  Written as a sum of kt depthwise 2D convolutions over time-shifted frames: exact, fast on CPU
  and made of TFLite builtins (``Conv3D(groups=C)`` is neither, docs/fidelity.md 6.2).
* ``"avg"``: 3D average pooling with zero padding counted in the divisor (PyTorch's
  ``AvgPool3d(k, 1, k // 2)``, ``count_include_pad=True``), i.e. the same depthwise convolution with
  a fixed uniform kernel.
* ``"max"``: 3D max pooling with padding ignored (PyTorch's ``MaxPool3d(k, 1, k // 2)``).
"""
from keras import ops

from rnl_keras.layers.graph_order import after


def _valid_source_mask(num_rows, num_frames, offset, dtype):
    """(B*T, 1, 1, 1) mask of the output frames t whose source frame t + offset is in [0, T)."""
    t = ops.arange(num_rows) % num_frames
    valid = ops.logical_and(t + offset >= 0, t + offset < num_frames)
    return ops.reshape(ops.cast(valid, dtype), (-1, 1, 1, 1))


def depthwise_conv3d(x, kernel):
    """Channel-wise 3D convolution, stride 1, symmetric zero padding (k - 1) / 2.

    x: (B, T, H, W, C); kernel: (kt, kh, kw, C), all kernel sizes odd. Returns (B, T, H, W, C) with
    out[b, t, h, w, c] = sum_{dt, dh, dw} kernel[dt, dh, dw, c] * x[b, t + dt - pt, h + dh - ph, w + dw - pw, c].

    Memory: the clips are flattened to B*T frames and padded by pt frames at both ends once; each
    temporal tap dt is then a depthwise 2D conv of the frames shifted by dt - pt, which are slices
    along the leading axis (views, no copy, on TF), masked where the source frame belongs to
    another clip (or the padding) and added to the running sum. The taps run one after another,
    so the peak is the input, its padded copy, the sum and one tap's output.
    """
    kt = kernel.shape[0]
    num_frames = x.shape[1]
    if num_frames is None:
        raise ValueError("depthwise_conv3d needs a static number of frames T (axis 1)")
    shape = ops.shape(x)
    frames = ops.reshape(x, (-1,) + tuple(shape[2:]))
    pt = (kt - 1) // 2
    num_rows = ops.shape(frames)[0]
    padded = ops.pad(frames, ((pt, pt), (0, 0), (0, 0), (0, 0))) if pt else frames
    out = None
    # Centre tap first (no mask), then the others in order of distance.
    for dt in sorted(range(kt), key=lambda d: abs(d - pt)):
        offset = dt - pt
        if abs(offset) >= num_frames:
            continue  # every source frame is padding
        source = padded[pt + offset:pt + offset + num_rows]
        y = ops.depthwise_conv(after(source, out), ops.expand_dims(kernel[dt], -1), strides=1,
                               padding="same")
        if offset:
            y = y * _valid_source_mask(num_rows, num_frames, offset, y.dtype)
        out = y if out is None else out + y
    return ops.reshape(out, shape)


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
