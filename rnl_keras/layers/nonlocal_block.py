"""The original embedded-Gaussian non-local block (Wang et al.), the baseline of Table III.

    theta = x W_theta, phi = x W_phi, g = x W_g       three 1x1x1 convs C -> C/2 (with bias)
    y_i = sum_j softmax_j(theta_i . phi_j) g_j          paper eq. (1) with the embedded Gaussian f
    z = BN(y W + b) + x                                 BN gamma = beta = 0 at init (identity)

Initialisation as TSM's NL block (``ops/non_local.py``) and the RNL release (docs/fidelity.md):
theta, phi, g (fan_in = C) and W (fan_in = C/2) have PyTorch's Conv3d default, kernel and bias
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), each drawn independently (its own initializer instance, see
``initializers``); the BN after W has gamma = beta = 0.

``subsample=True`` max-pools phi and g by 1x2x2, as in the NL paper. ``query_chunk_size`` bounds
the attention memory (query rows in chunks; in training the backward recomputes each chunk).
"""
import keras

from rnl_keras.layers import attention
from rnl_keras.layers.initializers import (conv_initializers, optional_initializer,
                                           serialize_optional)
from rnl_keras.layers.residual_projection import project_and_add
from rnl_keras.layers.region_nonlocal import flatten_positions, subsample_keys


@keras.saving.register_keras_serializable(package="rnl_keras")
class NonLocal(keras.layers.Layer):
    """Embedded-Gaussian non-local block, input and output (B, T, H, W, C).

    Args:
        reduction: the inner channels are C / reduction (2: the NL paper's C/2).
        subsample: 1x2x2 max-pooling of phi and g.
        query_chunk_size: query rows per attention block (bounded memory, same result).
        bn_epsilon, bn_momentum: of the zero-initialised BN after W (PyTorch's 1e-5, 0.1).
        kernel_initializer, bias_initializer: of theta, phi, g and W; ``None`` (default): PyTorch's
            default (module docstring). A given initializer is cloned for each of the four (an
            int seed offset by 0..3), so they never share draws.
    """

    def __init__(self, reduction=2, subsample=False, query_chunk_size=None, bn_epsilon=1e-5,
                 bn_momentum=0.9, kernel_initializer=None, bias_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.reduction = int(reduction)
        self.subsample = bool(subsample)
        self.query_chunk_size = None if query_chunk_size is None else int(query_chunk_size)
        self.bn_epsilon = float(bn_epsilon)
        self.bn_momentum = float(bn_momentum)
        self.kernel_initializer = optional_initializer(kernel_initializer)
        self.bias_initializer = optional_initializer(bias_initializer)

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"NonLocal expects (B, T, H, W, C), got shape {input_shape}")
        channels = input_shape[-1]
        self.inter_channels = max(channels // self.reduction, 1)
        policy = self.dtype_policy
        for index, name in enumerate(("theta", "phi", "g")):
            kernel, bias = conv_initializers(self.kernel_initializer, self.bias_initializer,
                                             channels, index)
            dense = keras.layers.Dense(self.inter_channels, kernel_initializer=kernel,
                                       bias_initializer=bias, dtype=policy, name=name)
            dense.build(input_shape)
            setattr(self, name, dense)
        kernel, bias = conv_initializers(self.kernel_initializer, self.bias_initializer,
                                         self.inter_channels, 3)
        self.w = keras.layers.Dense(channels, kernel_initializer=kernel, bias_initializer=bias,
                                    dtype=policy, name="w")
        self.w.build(tuple(input_shape[:-1]) + (self.inter_channels,))
        self.bn = keras.layers.BatchNormalization(
            axis=-1, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
            gamma_initializer="zeros", beta_initializer="zeros", dtype=policy, name="bn")
        self.bn.build(input_shape)

    def embeddings(self, x):
        queries, keys, values = self.theta(x), self.phi(x), self.g(x)
        if self.subsample:
            keys, values = subsample_keys(keys), subsample_keys(values)
        return tuple(flatten_positions(t) for t in (queries, keys, values))

    def call(self, x, training=None):
        queries, keys, values = self.embeddings(x)
        y = attention.attend(queries, keys, values, "gaussian", self.query_chunk_size,
                             recompute_grad=bool(training) and self.query_chunk_size is not None)
        return project_and_add(y, self.w, self.bn, x, training)

    def attention_weights(self, x, query_positions):
        """softmax weights of the chosen query rows (flattened T, H, W indices): (B, Q, N_k)."""
        queries, keys, _ = self.embeddings(x)
        return attention.query_rows_weights(queries, keys, query_positions, "gaussian")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "reduction": self.reduction,
            "subsample": self.subsample,
            "query_chunk_size": self.query_chunk_size,
            "bn_epsilon": self.bn_epsilon,
            "bn_momentum": self.bn_momentum,
            "kernel_initializer": serialize_optional(self.kernel_initializer),
            "bias_initializer": serialize_optional(self.bias_initializer),
        }
