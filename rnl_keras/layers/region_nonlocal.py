"""The region-based non-local (RNL) block, paper eqs. (2)-(9), as the authors' release computes it.

For an input clip x (B, T, H, W, C) and C' = C / reduction:

    v = x W_g + b_g                       1x1x1 conv with bias ("theta" in the release), eq. (9)
    p = F_theta(v)                        region summary theta(N_i) of eq. (3): channel-wise 3D conv
                                          (or avg / max pooling), stride 1, same padding
    y_i = sum_j f(p_i, p_j) v_j / C(x)    eqs. (4)-(7); f Gaussian (softmax, eq. (9)), dot or cosine
    z = BN(y W_z + b_z) + x               eq. (8); BN gamma = beta = 0 at init: a new block is the identity

The similarity is computed between regions (p) and the values are the un-aggregated v, exactly as
eq. (9): softmax(F(xW_g) F(xW_g)^T) xW_g. See docs/fidelity.md section 1 for how this matches the release.

Initialisation as the authors' release (``initializers``, docs/fidelity.md), each sub-layer with
its own initializer instance (independent draws):

    W_g (theta), b_g      U(-1/sqrt(C), 1/sqrt(C))        PyTorch's Conv3d default, fan_in = C
    F_theta               U(-b, b), b = sqrt(6 / ((C'/g + C') k)), g = max(C' // 32, 1),
                          k = kt kh kw
                          (xavier_uniform on the release's (C', C'/g, kt, kh, kw) grouped weight:
                          0.0119 at res3, C' = 256, 3x7x7; 0.0202 at res4, C' = 512, 3x3x3)
    W_z, b_z              U(-1/sqrt(C'), 1/sqrt(C'))      PyTorch's Conv3d default, fan_in = C'
    BN gamma, beta        0                               a new block is the identity

Options beyond the paper: ``query_chunk_size`` (bounded attention memory, same result) and
``key_subsample`` (1x2x2 max-pooling of keys and values, as the NL paper and the RNL release offer).
The attention itself is ``rnl_keras.layers.attention`` (its ``reference`` module states eqs.
(4)-(9); ``dispatch.attend`` picks the blocked kernel).
"""
import warnings

import keras
from keras import ops

from rnl_keras.layers import attention
from rnl_keras.layers.initializers import (ReleaseDepthwiseXavierUniform, conv_initializers,
                                           optional_initializer, serialize_optional)
from rnl_keras.layers.region_aggregation import depthwise_conv3d, max_pool3d
from rnl_keras.layers.residual_projection import project_and_add

AGGREGATIONS = ("conv", "avg", "max")


def _triple(value, name):
    if isinstance(value, int):
        value = (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3 or any(v < 1 or v % 2 == 0 for v in value):
        raise ValueError(f"{name} must be three odd positive ints (kt, kh, kw), got {value}")
    return value


def subsample_keys(x):
    """1x2x2 max-pooling (stride 1x2x2, no padding) of a clip tensor (B, T, H, W, C)."""
    shape = ops.shape(x)
    frames = ops.reshape(x, (-1,) + tuple(shape[2:]))
    pooled = ops.max_pool(frames, 2, strides=2, padding="valid")
    pshape = ops.shape(pooled)
    return ops.reshape(pooled, (-1, x.shape[1]) + tuple(pshape[1:]))


def flatten_positions(x):
    """(B, T, H, W, C) -> (B, T*H*W, C), static when the shape is."""
    dims = x.shape[1:4]
    n = dims[0] * dims[1] * dims[2] if None not in dims else -1
    return ops.reshape(x, (-1, n, x.shape[-1]))


@keras.saving.register_keras_serializable(package="rnl_keras")
class RegionNonLocal(keras.layers.Layer):
    """Region-based non-local block (Huang & Bors), input and output (B, T, H, W, C).

    Args:
        similarity: ``"gaussian"`` (eq. 5, softmax normalisation), ``"dot"`` (eq. 6, / THW) or
            ``"cosine"`` (eq. 7, ReLU(cos) / THW).
        aggregation: F_theta: ``"conv"`` (channel-wise conv), ``"avg"`` or ``"max"`` pooling.
        kernel_size: region size (kt, kh, kw) of F_theta, odd; 3x7x7 in res3, 3x3x3 in res4.
        reduction: C' = C / reduction channels for v and p (2 in the paper).
        query_chunk_size: build the attention this many query rows at a time (same output,
            O(N * chunk) memory instead of O(N^2)). ``None``: without key sub-sampling the
            Gaussian / cosine forms still run in blocks of ``attention.dispatch.DEFAULT_BLOCK``
            rows (the symmetric path, which halves P P^T); with it, the matrix is built at once.
            In training every blocked path (symmetric, or row chunks) recomputes each block in
            the backward instead of keeping it (``attention.recompute``), so training memory is
            bounded too (res3, 4 clips: ~0.45 GB instead of ~2.4 GB with plain autodiff, and no
            slower on CPU, ``bench/blocks.py``).
        key_subsample: 1x2x2 max-pool the keys p_j and values v_j (queries stay full resolution);
            C(x) then counts the pooled key positions.
        bn_epsilon, bn_momentum: of the zero-initialised BatchNorm after W_z (PyTorch's 1e-5, 0.1).
        kernel_initializer, bias_initializer: of theta (W_g) and W_z; ``None`` (default): the
            release's, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels and biases (module
            docstring). A given initializer is cloned for each of the two (its int seed offset by
            0 and 1), so they never share draws. F_theta always starts as the release's.
        fixed_offsets: deprecated and ignored (accepted so that older configs and ``.keras``
            files load): the fixed-offset softmax it enabled was retired because trained models'
            features never meet its condition (``rnl_keras.layers.attention``, the measurements).
    """

    def __init__(self, similarity="gaussian", aggregation="conv", kernel_size=(3, 7, 7),
                 reduction=2, query_chunk_size=None, key_subsample=False, bn_epsilon=1e-5,
                 bn_momentum=0.9, kernel_initializer=None, fixed_offsets=None,
                 bias_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if similarity not in attention.SIMILARITIES:
            raise ValueError(f"RegionNonLocal: similarity must be one of "
                             f"{attention.SIMILARITIES}, got {similarity!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"RegionNonLocal: aggregation must be one of {AGGREGATIONS}, "
                             f"got {aggregation!r}")
        if query_chunk_size is not None and int(query_chunk_size) < 1:
            raise ValueError(f"RegionNonLocal: query_chunk_size must be >= 1 or None, "
                             f"got {query_chunk_size}")
        self.similarity = similarity
        self.aggregation = aggregation
        self.kernel_size = _triple(kernel_size, "RegionNonLocal: kernel_size")
        self.reduction = int(reduction)
        self.query_chunk_size = None if query_chunk_size is None else int(query_chunk_size)
        self.key_subsample = bool(key_subsample)
        if fixed_offsets is not None:
            warnings.warn("RegionNonLocal: fixed_offsets is deprecated and ignored (the "
                          "fixed-offset softmax was retired; every Gaussian block runs the exact "
                          "running-max softmax)", DeprecationWarning, stacklevel=2)
        self.bn_epsilon = float(bn_epsilon)
        self.bn_momentum = float(bn_momentum)
        self.kernel_initializer = optional_initializer(kernel_initializer)
        self.bias_initializer = optional_initializer(bias_initializer)

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"RegionNonLocal expects (B, T, H, W, C), got shape {input_shape}")
        if input_shape[1] is None:
            raise ValueError("RegionNonLocal needs a static number of frames T (axis 1)")
        channels = input_shape[-1]
        self.inter_channels = max(channels // self.reduction, 1)
        policy = self.dtype_policy
        kernel, bias = conv_initializers(self.kernel_initializer, self.bias_initializer,
                                         channels, 0)
        self.theta = keras.layers.Dense(self.inter_channels, use_bias=True,
                                        kernel_initializer=kernel, bias_initializer=bias,
                                        dtype=policy, name="theta")
        self.theta.build(input_shape)
        if self.aggregation == "conv":
            self.f_theta_kernel = self.add_weight(
                name="f_theta_kernel", shape=self.kernel_size + (self.inter_channels,),
                initializer=ReleaseDepthwiseXavierUniform())
        kernel, bias = conv_initializers(self.kernel_initializer, self.bias_initializer,
                                         self.inter_channels, 1)
        self.w_z = keras.layers.Dense(channels, use_bias=True, kernel_initializer=kernel,
                                      bias_initializer=bias, dtype=policy, name="w_z")
        self.w_z.build(tuple(input_shape[:-1]) + (self.inter_channels,))
        self.bn = keras.layers.BatchNormalization(
            axis=-1, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
            gamma_initializer="zeros", beta_initializer="zeros", dtype=policy, name="bn")
        self.bn.build(input_shape)

    # -- the pieces of eq. (9) ------------------------------------------------------------------
    def region_summary(self, v):
        """F_theta(v) of eq. (3): (B, T, H, W, C') -> (B, T, H, W, C')."""
        if self.aggregation == "conv":
            return depthwise_conv3d(v, ops.cast(self.f_theta_kernel, v.dtype))
        if self.aggregation == "avg":
            kt, kh, kw = self.kernel_size
            kernel = ops.full(self.kernel_size + (self.inter_channels,), 1.0 / (kt * kh * kw),
                              dtype=v.dtype)
            return depthwise_conv3d(v, kernel)
        return max_pool3d(v, self.kernel_size)

    def embeddings(self, x):
        """Queries, keys and values (B, N, C'), (B, N_k, C'), (B, N_k, C') of the block."""
        v = self.theta(x)
        p = self.region_summary(v)
        keys, values = p, v
        if self.key_subsample:
            keys, values = subsample_keys(p), subsample_keys(v)
        queries, keys, values = (flatten_positions(t) for t in (p, keys, values))
        if self.similarity == "cosine":
            queries, keys = attention.l2_normalize(queries), attention.l2_normalize(keys)
        return queries, keys, values

    def call(self, x, training=None):
        queries, keys, values = self.embeddings(x)
        # Without key sub-sampling the keys are the queries (S = P P^T): attend builds half of S.
        y = attention.attend(queries, keys, values, self.similarity, self.query_chunk_size,
                             symmetric=not self.key_subsample, recompute_grad=bool(training))
        return project_and_add(y, self.w_z, self.bn, x, training)

    def attention_weights(self, x, query_positions):
        """w_ij for the chosen query rows only: float32 (B, Q, N_k).

        ``query_positions`` are indices into the flattened (T, H, W) grid of ``x``
        (t * H * W + h * W + w). Only Q x N_k weights are built, never N x N. The keys lie on the
        (T, H, W) grid, or (T, H // 2, W // 2) with ``key_subsample``.
        """
        queries, keys, _ = self.embeddings(x)
        return attention.query_rows_weights(queries, keys, query_positions, self.similarity)

    @property
    def fixed_offsets(self):
        """Always False: the deprecated fixed-offset softmax is never taken."""
        return False

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "similarity": self.similarity,
            "aggregation": self.aggregation,
            "kernel_size": self.kernel_size,
            "reduction": self.reduction,
            "query_chunk_size": self.query_chunk_size,
            "key_subsample": self.key_subsample,
            "bn_epsilon": self.bn_epsilon,
            "bn_momentum": self.bn_momentum,
            "kernel_initializer": serialize_optional(self.kernel_initializer),
            "bias_initializer": serialize_optional(self.bias_initializer),
        }
