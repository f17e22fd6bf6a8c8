"""Channel attention blocks: the paper's additive SE (eqs. (10)-(12)), the original SE, and the
GCNet-style channel gate that the authors' release ships instead of SE (docs/fidelity.md, 2.4).

All take and return clip tensors (B, T, H, W, C) and pool over all T*H*W positions.

Initialisation (``initializers``, docs/fidelity.md): every Dense / 1x1x1 conv has PyTorch's default,
kernel and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with its own initializer instance, except the
last projection of the additive SE and of the gate (W2, W_v2), which starts at zero (the release's
``constant_(W_v2.weight, 0)``, ``constant_(W_v2.bias, 0)``), so those blocks start as the identity.
"""
import keras
from keras import ops

from rnl_keras.layers.initializers import conv_initializers

SE_MODES = ("add", "scale")


def _broadcastable(s):
    """(B, C) -> (B, 1, 1, 1, C). A reshape, not ``s[:, None, ...]``: TFLite has no builtin for
    strided slices that add axes to a tensor of unknown batch size."""
    return ops.reshape(s, (-1, 1, 1, 1, s.shape[-1]))


def _dense(units, fan_in, policy, name, use_bias=True, zero=False):
    """A Dense layer built for ``fan_in`` inputs: PyTorch's default init, or all zeros."""
    kernel, bias = ("zeros", "zeros") if zero else conv_initializers(None, None, fan_in, 0)
    dense = keras.layers.Dense(units, use_bias=use_bias, kernel_initializer=kernel,
                               bias_initializer=bias, dtype=policy, name=name)
    dense.build((None, fan_in))
    return dense


def _bn(policy, epsilon, momentum, name):
    return keras.layers.BatchNormalization(axis=-1, epsilon=epsilon, momentum=momentum,
                                           dtype=policy, name=name)


@keras.saving.register_keras_serializable(package="rnl_keras")
class SqueezeExcite(keras.layers.Layer):
    """Squeeze-and-excitation over a clip.

    ``mode="add"``, the paper's modified SE (Section III-D):
        s' = mean_i x_i                          eq. (10)
        s  = W2 ReLU(BN(W1 s'))                  eq. (11), W1: C -> C/r, W2: C/r -> C, no biases
        v  = x + s (broadcast over T, H, W)      eq. (12)
      W2 starts at zero, so a new block is the identity (as the RNL block's BN); W1 has
      PyTorch's default U(-1/sqrt(C), 1/sqrt(C)). BN: PyTorch's BatchNorm1d defaults (eps 1e-5,
      momentum 0.1, i.e. Keras' 0.9: Keras' moving = m * moving + (1 - m) * batch, PyTorch's
      running = (1 - m) * running + m * batch).
      Eq. (11) writes r = 2; Table III's parameter counts are those of r = 16
      (docs/fidelity.md, 2.2).
    ``mode="scale"``, the original SE network (Hu et al.), Table III's "+5 SE":
        v = x * sigmoid(W2 ReLU(W1 s' + b1) + b2)
      W1, b1 ~ U(-1/sqrt(C), 1/sqrt(C)), W2, b2 ~ U(-1/sqrt(C/r), 1/sqrt(C/r)) (PyTorch's Linear).
    """

    def __init__(self, reduction=16, mode="add", bn_epsilon=1e-5, bn_momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        if mode not in SE_MODES:
            raise ValueError(f"SqueezeExcite: mode must be one of {SE_MODES}, got {mode!r}")
        self.reduction = int(reduction)
        self.mode = mode
        self.bn_epsilon = float(bn_epsilon)
        self.bn_momentum = float(bn_momentum)

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"SqueezeExcite expects (B, T, H, W, C), got shape {input_shape}")
        channels = input_shape[-1]
        hidden = max(channels // self.reduction, 1)
        policy = self.dtype_policy
        additive = self.mode == "add"
        self.w1 = _dense(hidden, channels, policy, "w1", use_bias=not additive)
        if additive:
            self.bn = _bn(policy, self.bn_epsilon, self.bn_momentum, "bn")
            self.bn.build((None, hidden))
        self.w2 = _dense(channels, hidden, policy, "w2", use_bias=not additive, zero=additive)

    def call(self, x, training=None):
        squeezed = ops.mean(x, axis=(1, 2, 3))
        hidden = self.w1(squeezed)
        if self.mode == "add":
            hidden = self.bn(hidden, training=training)
        s = _broadcastable(self.w2(ops.relu(hidden)))
        if self.mode == "add":
            return x + s
        return x * ops.sigmoid(s)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "mode": self.mode,
                "bn_epsilon": self.bn_epsilon, "bn_momentum": self.bn_momentum}


@keras.saving.register_keras_serializable(package="rnl_keras")
class ChannelGate(keras.layers.Layer):
    """GCNet-style channel gate of the authors' release (the shipped "channel attention").

        a = softmax_j(x_j W_k + b_k)                attention pooling over the T*H*W positions
        c = sum_j a_j x_j                           context (B, C)
        out = W_v2 ReLU(BN(W_v1 c + b1)) + b2       W_v1: C -> C/r, W_v2: C/r -> C, zero-initialised
        v = x + out (broadcast)

    Initialisation as the release (``ops/rnl.py``): W_k, b_k ~ U(-1/sqrt(C), 1/sqrt(C)) (Conv3d
    default), W_v1, b1 ~ U(-1/sqrt(C), 1/sqrt(C)) (Linear default), W_v2 = 0 and b2 = 0, BN gamma 1,
    beta 0. A new gate is the identity.

    Args:
        reduction: C/r hidden units; the release's gate uses r = 2.
        bn_epsilon, bn_momentum: of BN. The release's ``BatchNorm1d(C/r, eps=1e-5, momentum=0.01)``
            updates running = (1 - 0.01) * running + 0.01 * batch; Keras' moving = m * moving +
            (1 - m) * batch, so the release's value is m = 1 - 0.01 = 0.99 (the default here, unlike
            the other blocks' BNs, which keep PyTorch's default 0.1, i.e. 0.9).
    """

    def __init__(self, reduction=2, bn_epsilon=1e-5, bn_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.reduction = int(reduction)
        self.bn_epsilon = float(bn_epsilon)
        self.bn_momentum = float(bn_momentum)

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"ChannelGate expects (B, T, H, W, C), got shape {input_shape}")
        channels = input_shape[-1]
        hidden = max(channels // self.reduction, 1)
        policy = self.dtype_policy
        self.w_k = _dense(1, channels, policy, "w_k")
        self.w_v1 = _dense(hidden, channels, policy, "w_v1")
        self.bn1 = _bn(policy, self.bn_epsilon, self.bn_momentum, "bn1")
        self.bn1.build((None, hidden))
        self.w_v2 = _dense(channels, hidden, policy, "w_v2", zero=True)

    def call(self, x, training=None):
        channels = x.shape[-1]
        flat = ops.reshape(x, (ops.shape(x)[0], -1, channels))            # (B, N, C)
        logits = ops.cast(self.w_k(flat)[..., 0], "float32")              # (B, N)
        weights = ops.cast(ops.softmax(logits, axis=-1), x.dtype)
        context = ops.squeeze(ops.matmul(ops.expand_dims(weights, 1), flat), 1)  # (B, C)
        hidden = ops.relu(self.bn1(self.w_v1(context), training=training))
        return x + _broadcastable(self.w_v2(hidden))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction,
                "bn_epsilon": self.bn_epsilon, "bn_momentum": self.bn_momentum}
