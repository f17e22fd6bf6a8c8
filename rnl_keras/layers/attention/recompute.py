"""Memory-bounded training of the blocked attention paths: the backward recomputes the scores.

The forward kernels (``kernels``) build the weights w_ij of the Gaussian (softmax,
paper eqs. (5), (9)) and cosine (ReLU(q_i . k_j) / N_k, eq. (7)) forms block by block, so it
needs O(block * N_k + N d) memory. Plain autodiff would keep every exp / ReLU block for the
backward pass: O(N_q * N_k) again in training (res3, N = 6272: ~160 MB per clip and copy).
``dispatch.attend(..., recompute_grad=True)`` wraps those paths in ``tf.custom_gradient`` instead
(FlashAttention-style): the forward is the same computation, and it keeps only its inputs, its
output y and, for the Gaussian form, the float32 log-sum-exp L_i = m_i + log(l_i) of every query
row. The backward rebuilds each score block S_ab = Q_a K_b^T from Q and K and derives, for
y_i = sum_j w_ij v_j (eqs. (4)-(9)) and the incoming gradient dy:

* Gaussian: A_ab = exp(S_ab - L_a) (the softmax weights), D_a = rowsum(dy_a * y_a) (once),
  dV_b += A_ab^T dy_a,  dS_ab = A_ab * (dy_a V_b^T - D_a);
* cosine:   W_ab = ReLU(S_ab) / N_k,  dV_b += W_ab^T dy_a,  dS_ab = (dy_a V_b^T) [S_ab > 0] / N_k;
* then dQ_a += dS_ab K_b and dK_b += dS_ab^T Q_a.

The symmetric path (Q = K = P, S = P P^T) builds S_ab once for b >= a and serves the pair
(a, b) and, transposed, the pair (b, a) (A_ba^T = exp(S_ab - L_b^T)); the two dS blocks are
summed, G = dS_ab + dS_ba^T, and dP_a += G P_b, dP_b += G^T P_a (dP = dQ + dK). The row-chunked
path takes one query chunk against all keys at a time.

Memory: a few (block, block) or (chunk, N_k) float32 blocks at a time (the blocks run in
sequence in graph mode, ordered by control dependencies like the forward) plus O(N d) inputs,
statistics and float32 accumulators; never N x N. Cost: the score blocks are computed twice (Q K^T
once more, about +1/3 of the forward's multiply-adds). Statistics and accumulation are float32
whatever the input dtype (``mixed_bfloat16``); the products run in the input dtype, like the
forward, and the gradients are cast back to the input dtypes. TensorFlow backend only (``attend``
uses it only there); N and the block size must be static.
"""
import tensorflow as tf

from rnl_keras.layers.attention import kernels
from rnl_keras.layers.attention.blocks import (accumulate, block_starts, concat_rows, logits,
                                               split_rows)
from rnl_keras.layers.graph_order import after


def symmetric_attend(points, value, similarity, block):
    """y = w(P, P) V of ``kernels.symmetric_forward``, with the recomputing backward (dP, dV)."""

    @tf.custom_gradient
    def symmetric_attention(p, v):
        # stop_gradient: the tape records none of the forward's blocks (eager mode keeps nothing).
        y, lse = kernels.symmetric_forward(tf.stop_gradient(p), tf.stop_gradient(v), similarity,
                                           block)

        def grad(dy):
            return _symmetric_backward(p, v, y, lse, dy, similarity, block)

        return y, grad

    return symmetric_attention(tf.convert_to_tensor(points), tf.convert_to_tensor(value))


def chunked_attend(query, key, value, similarity, chunk):
    """y = w(Q, K) V of ``kernels.chunked_forward``, with the recomputing backward (dQ, dK, dV)."""

    @tf.custom_gradient
    def chunked_attention(q, k, v):
        y, lse = kernels.chunked_forward(
            tf.stop_gradient(q), tf.stop_gradient(k), tf.stop_gradient(v), similarity, chunk,
            with_stats=True)

        def grad(dy):
            return _chunked_backward(q, k, v, y, lse, dy, similarity, chunk)

        return y, grad

    return chunked_attention(*(tf.convert_to_tensor(t) for t in (query, key, value)))


def _symmetric_backward(points, value, y, lse, dy, similarity, block):
    """(dP, dV) of the symmetric path, one upper-triangle block S_ab at a time."""
    n = points.shape[1]
    starts = block_starts(n, block)
    count = len(starts)
    p, v, g = (split_rows(t, starts, block) for t in (points, value, dy))
    stat, delta = _row_stats(lse, y, dy, similarity)
    stat, delta = split_rows(stat, starts, block), split_rows(delta, starts, block)
    dp, dv = [None] * count, [None] * count
    last = None
    for a in range(count):
        for b in range(a, count):
            p_a, p_b, v_a, v_b, g_a, g_b = _gate([p[a], p[b], v[a], v[b], g[a], g[b]], last)
            scores = logits(p_a, p_b)                          # S_ab, float32
            w, ds = _block_grads(scores, stat[a], delta[a], g_a, v_b, similarity, n, False)
            dv[b] = accumulate(dv[b], _mm(w, g_a, transpose_a=True))
            if b != a:                                                   # pair (b, a): S_ab^T
                w_t, ds_t = _block_grads(scores, _t(stat[b]), _t(delta[b]), g_b, v_a,
                                         similarity, n, True)
                dv[a] = accumulate(dv[a], _mm(w_t, g_b))
                ds = ds + ds_t                                           # G = dS_ab + dS_ba^T
            dp[a] = accumulate(dp[a], _mm(ds, p_b))
            dp[b] = accumulate(dp[b], _mm(ds, p_a, transpose_a=True))
            last = _done(dp[a], dp[b], dv[a], dv[b])
    return _concat(dp, points.dtype), _concat(dv, value.dtype)


def _chunked_backward(query, key, value, y, lse, dy, similarity, chunk):
    """(dQ, dK, dV) of the row-chunked path, one (chunk, N_k) score block at a time."""
    starts = block_starts(query.shape[1], chunk)
    q, g = split_rows(query, starts, chunk), split_rows(dy, starts, chunk)
    stat, delta = _row_stats(lse, y, dy, similarity)
    stat, delta = split_rows(stat, starts, chunk), split_rows(delta, starts, chunk)
    dq, dk, dv = [], None, None
    last = None
    for a in range(len(starts)):
        q_a, g_a = _gate([q[a], g[a]], last)
        scores = logits(q_a, key)                              # (B, c, N_k)
        w, ds = _block_grads(scores, stat[a], delta[a], g_a, value, similarity, key.shape[1],
                             False)
        dv = accumulate(dv, _mm(w, g_a, transpose_a=True))
        dq.append(_mm(ds, key))
        dk = accumulate(dk, _mm(ds, q_a, transpose_a=True))
        last = _done(dq[-1], dk, dv)
    return (_concat(dq, query.dtype), tf.cast(dk, key.dtype), tf.cast(dv, value.dtype))


def _block_grads(scores, stat, delta, dy_rows, v_keys, similarity, n_keys, transposed):
    """(w, dS) of one score block, float32, in the layout of ``scores``.

    ``transposed=False``: ``scores`` is S_ab (rows a = the query rows of ``dy_rows``, keys b =
    ``v_keys``); ``stat`` / ``delta`` are (B, c_a, 1). ``transposed=True``: ``scores`` is S_ba^T
    (query rows b along axis 2); ``stat`` / ``delta`` are (B, 1, c_b); w and dS come transposed.
    """
    if transposed:
        d_w = _mm(v_keys, dy_rows, transpose_b=True)                     # (dy_b V_a^T)^T
    else:
        d_w = _mm(dy_rows, v_keys, transpose_b=True)                     # dy_a V_b^T
    if similarity == "gaussian":
        w = tf.exp(scores - stat)
        return w, w * (d_w - delta)
    w = tf.nn.relu(scores) / float(n_keys)
    return w, tf.where(scores > 0.0, d_w, 0.0) / float(n_keys)


def _row_stats(lse, y, dy, similarity):
    """(L, D) per query row, float32 (B, N_q, 1), D_i = sum_c dy_ic y_ic; (None, None) if cosine."""
    if similarity != "gaussian":
        return None, None
    delta = tf.reduce_sum(tf.cast(dy, tf.float32) * tf.cast(y, tf.float32), axis=-1,
                          keepdims=True)
    return lse, delta


def _mm(x, y, transpose_a=False, transpose_b=False):
    """float32 x @ y, the product in y's dtype (the input dtype, as in the forward)."""
    out = tf.linalg.matmul(tf.cast(x, y.dtype), y, transpose_a=transpose_a,
                           transpose_b=transpose_b)
    return tf.cast(out, tf.float32)


def _t(t):
    return None if t is None else tf.linalg.matrix_transpose(t)          # (B, c, 1) -> (B, 1, c)


def _gate(tensors, dependency):
    """The tensors, ordered after ``dependency`` in a graph (one block pair at a time)."""
    return [after(t, dependency) for t in tensors]


def _done(*tensors):
    """One op that finishes when all ``tensors`` are computed (None when executing eagerly)."""
    return None if tf.executing_eagerly() else tf.group(*tensors)


def _concat(blocks, dtype):
    return tf.cast(concat_rows(blocks), dtype)
