"""Channel attention blocks: the paper's additive SE (eqs. (10)-(12)), the original SE, and the
GCNet-style channel gate that the authors' release ships instead of SE (FACTS.md section 1).

All take and return clip tensors (B, T, H, W, C) and pool over all T*H*W positions.
"""
import keras
from keras import ops

SE_MODES = ("add", "scale")


def _broadcastable(s):
    """(B, C) -> (B, 1, 1, 1, C). A reshape, not ``s[:, None, ...]``: TFLite has no builtin for
    strided slices that add axes to a tensor of unknown batch size."""
    return ops.reshape(s, (-1, 1, 1, 1, s.shape[-1]))


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
      W2 starts at zero, so a new block is the identity (as the RNL block's BN).
      Eq. (11) writes r = 2; Table III's parameter counts are those of r = 16 (FACTS.md section 2).
    ``mode="scale"``, the original SE network (Hu et al.), Table III's "+5 SE":
        v = x * sigmoid(W2 ReLU(W1 s' + b1) + b2)
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
        self.w1 = keras.layers.Dense(hidden, use_bias=not additive, dtype=policy, name="w1")
        self.w1.build((None, channels))
        if additive:
            self.bn = _bn(policy, self.bn_epsilon, self.bn_momentum, "bn")
            self.bn.build((None, hidden))
        self.w2 = keras.layers.Dense(channels, use_bias=not additive,
                                     kernel_initializer="zeros" if additive else "glorot_uniform",
                                     dtype=policy, name="w2")
        self.w2.build((None, hidden))

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
    """

    def __init__(self, reduction=2, bn_epsilon=1e-5, bn_momentum=0.9, **kwargs):
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
        self.w_k = keras.layers.Dense(1, dtype=policy, name="w_k")
        self.w_k.build((None, channels))
        self.w_v1 = keras.layers.Dense(hidden, dtype=policy, name="w_v1")
        self.w_v1.build((None, channels))
        self.bn1 = _bn(policy, self.bn_epsilon, self.bn_momentum, "bn1")
        self.bn1.build((None, hidden))
        self.w_v2 = keras.layers.Dense(channels, kernel_initializer="zeros", dtype=policy,
                                       name="w_v2")
        self.w_v2.build((None, hidden))

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
