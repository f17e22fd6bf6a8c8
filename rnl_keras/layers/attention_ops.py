"""The attention products shared by the RNL and NL blocks.

With queries q_i, keys k_j and values v_j (rows of (B, N, d) tensors) these compute

    y_i = sum_j w_ij v_j,   w_ij = f(q_i, k_j) / C(x)                        (paper eqs. (1), (4))

for the similarity functions of the paper:

* ``"gaussian"``: w_i. = softmax_j(q_i . k_j), no 1/sqrt(d) scaling                       (eqs. (5), (9))
* ``"dot"``:      w_ij = (q_i . k_j) / N_k                                               (eq. (6))
* ``"cosine"``:   w_ij = ReLU(q_i . k_j / (|q_i| |k_j|)) / N_k                            (eq. (7))

with N_k the number of key positions (C(x) = THW). Softmax logits are taken in float32 whatever
the compute dtype, so ``mixed_bfloat16`` stays stable.

Memory: the Gaussian and cosine forms need the (N_q, N_k) weight matrix; ``query_chunk_size``
builds it ``query_chunk_size`` query rows at a time, in sequence, so the peak is
O(query_chunk_size * N_k) instead of O(N_q * N_k). The dot-product form is linear in w, so it is
computed as q (k^T v) / N_k: O(N d^2) arithmetic and no N x N matrix at all.
"""
import keras
from keras import ops

SIMILARITIES = ("gaussian", "dot", "cosine")


def l2_normalize(x, epsilon=1e-12):
    """x / max(|x|_2, eps) over the last axis (PyTorch ``F.normalize``)."""
    norm = ops.sqrt(ops.sum(ops.square(ops.cast(x, "float32")), axis=-1, keepdims=True))
    return x / ops.cast(ops.maximum(norm, epsilon), x.dtype)


def num_rows(x):
    """Static number of rows (axis 1) when known, else a scalar tensor."""
    return x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]


def attention_weights(query, key, similarity):
    """w_ij of the chosen query rows, float32 (B, N_q, N_k). Cosine expects normalised inputs."""
    logits = ops.cast(ops.matmul(query, ops.transpose(key, (0, 2, 1))), "float32")
    if similarity == "gaussian":
        return ops.softmax(logits, axis=-1)
    n_keys = ops.cast(num_rows(key), "float32")
    if similarity == "dot":
        return logits / n_keys
    if similarity == "cosine":
        return ops.relu(logits) / n_keys
    raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")


def _after(x, dependency):
    """Return ``x`` ordered after ``dependency`` in a TF graph, so chunks run one at a time."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            with tf.control_dependencies([dependency]):
                return tf.identity(x)
    return x


def attend(query, key, value, similarity, query_chunk_size=None):
    """y = w(query, key) @ value, chunked over query rows when ``query_chunk_size`` is set."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if similarity == "dot":
        context = ops.matmul(ops.transpose(key, (0, 2, 1)), value)  # (B, d, dv)
        return ops.matmul(query, context) / ops.cast(num_rows(key), value.dtype)
    n_queries = query.shape[1]
    if not query_chunk_size or n_queries is None or query_chunk_size >= n_queries:
        return ops.matmul(ops.cast(attention_weights(query, key, similarity), value.dtype), value)
    outputs = []
    for start in range(0, n_queries, query_chunk_size):
        rows = query[:, start:start + query_chunk_size]
        if outputs:
            rows = _after(rows, outputs[-1])
        weights = attention_weights(rows, key, similarity)
        outputs.append(ops.matmul(ops.cast(weights, value.dtype), value))
    return ops.concatenate(outputs, axis=1)
