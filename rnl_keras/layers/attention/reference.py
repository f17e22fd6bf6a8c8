"""The attention of the RNL and NL blocks as the paper writes it: the oracle of every fast path.

With queries q_i, keys k_j and values v_j (rows of (B, N_q, d), (B, N_k, d), (B, N_k, d_v)):

    y_i = sum_j w_ij v_j,   w_ij = f(q_i, k_j) / C(x)                        paper eqs. (1), (4)

* ``"gaussian"``: f = exp(q_i . k_j), C(x) = sum_j f: w_i. = softmax_j(q_i . k_j), with no
  1/sqrt(d) scaling                                                              eqs. (5), (9)
* ``"dot"``:      f = q_i . k_j, C(x) = N_k (the number of key positions, THW)    eq. (6)
* ``"cosine"``:   f = ReLU(q_i . k_j / (|q_i| |k_j|)), C(x) = N_k                 eq. (7)
  (the caller L2-normalises q and k with :func:`l2_normalize` first, as the release does).

In the RNL block q = k = p = F_theta(x W_g) (eq. (3)) and v = x W_g; in the NL block q, k, v are
three projections of x. Here the whole N_q x N_k weight matrix is built at once, in plain
``keras.ops``, so this module is short and backend-neutral; ``kernels`` computes the same numbers
in blocks and ``dispatch.attend`` chooses how. Logits are float32 whatever the compute dtype
(``mixed_bfloat16`` keeps the softmax stable; docs/fidelity.md 6.5).
"""
from keras import ops

SIMILARITIES = ("gaussian", "dot", "cosine")


def check_similarity(similarity):
    """Raise a ValueError naming the allowed values unless ``similarity`` is one of them."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")


def l2_normalize(x, epsilon=1e-12):
    """x / max(|x|_2, eps) over the last axis (PyTorch ``F.normalize``), for eq. (7)."""
    norm = ops.sqrt(ops.sum(ops.square(ops.cast(x, "float32")), axis=-1, keepdims=True))
    return x / ops.cast(ops.maximum(norm, epsilon), x.dtype)


def num_rows(x):
    """Static number of rows (axis 1) when known, else a scalar tensor."""
    return x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]


def attention_weights(query, key, similarity):
    """w_ij of eqs. (5)-(7), (9) with their normalisation C(x): float32 (B, N_q, N_k).

    Args:
        query: (B, N_q, d) queries q_i (L2-normalised for ``"cosine"``).
        key: (B, N_k, d) keys k_j (L2-normalised for ``"cosine"``).
        similarity: ``"gaussian"``, ``"dot"`` or ``"cosine"``.

    Returns:
        The weights; each row sums to 1 for ``"gaussian"``.
    """
    check_similarity(similarity)
    logits = ops.cast(ops.matmul(query, ops.swapaxes(key, -1, -2)), "float32")   # q_i . k_j
    if similarity == "gaussian":
        return ops.softmax(logits, axis=-1)                                       # eqs. (5), (9)
    n_keys = ops.cast(num_rows(key), "float32")
    if similarity == "dot":
        return logits / n_keys                                                    # eq. (6)
    return ops.relu(logits) / n_keys                                              # eq. (7)


def attend(query, key, value, similarity):
    """y_i = sum_j w_ij v_j (eq. (4)), the weights materialised: (B, N_q, d_v) in value's dtype.

    Args:
        query, key: as for :func:`attention_weights`.
        value: (B, N_k, d_v) values v_j.
        similarity: ``"gaussian"``, ``"dot"`` or ``"cosine"``.
    """
    weights = attention_weights(query, key, similarity)
    return ops.matmul(ops.cast(weights, value.dtype), value)


def query_rows_weights(queries, keys, query_positions, similarity):
    """w_ij of the query rows at ``query_positions`` (indices into axis 1): (B, Q, N_k) float32.

    Only Q x N_k weights are built (the attention maps of chosen positions).
    """
    rows = ops.take(queries, ops.convert_to_tensor(query_positions, "int32"), axis=1)
    return attention_weights(rows, keys, similarity)
