"""The blocked forward kernels: ``reference.attend``'s numbers without its N_q x N_k matrix.

Each returns (y, L): y (B, N_q, d_v) in the value dtype and, for the Gaussian form, the float32
log-sum-exp L_i = log sum_j exp(q_i . k_j) of every query row (B, N_q, 1), which the recomputing
backward (``recompute``) needs; L is None for the cosine form. All are exact up to float32 rounding
and made of matmul, softmax, exp, log, max, slices and concat only (TFLite builtins).

* :func:`dot_attend`, eq. (6): linear in w, so y = q (k^T v) / N_k: O(N d^2), no N x N matrix.
* :func:`rows_forward`: a block of query rows against all keys, its weights materialised. The
  Gaussian form without statistics is one fused softmax (oneDNN's on CPU, ~2x faster than max,
  sub + exp and sum as separate ops); with them, e_ij = exp(s_ij - m_i), y_i = (sum_j e_ij v_j) /
  sum_j e_ij, L_i = m_i + log sum_j e_ij.
* :func:`chunked_forward`: :func:`rows_forward` ``chunk`` query rows at a time, in sequence:
  peak O(chunk * N_k) instead of O(N_q * N_k).
* :func:`symmetric_forward`, queries = keys = P (the RNL block without key sub-sampling, S = P P^T):
  S is built in square blocks S_ab = P_a P_b^T for b >= a only, and each serves its row block a
  and, transposed, the row block b (S_ba = S_ab^T): half of Q K^T. The Gaussian form is a streaming
  ("online") softmax over the key blocks: a running max m, a running sum l and a float32
  accumulator, rescaled by exp(m_old - m_new) when the max grows, divided by l at the end. A
  block's rows (S_ab) take the fused softmax, p = exp(s - lse_b) with lse_b = max_b - log(max p),
  adding (p V_b) exp(lse_b - m) and exp(lse_b - m); its columns (S_ab^T) take e = exp(S_ab - m_b^T)
  and the GEMM (V_a | 1)^T e, whose last row is the column sums. The columns' products are kept
  transposed, (d_v + 1, c_b) per row block b, in a running state of their own that becomes the
  rows' state when the loop reaches block b (transposed once, (B, c_b, d_v + 1), and rescaled on
  like any state): no score block is ever copied, transposed or sliced, and the GEMM runs in the
  layout oneDNN is fastest in
  (3-4% less CPU time for the res3 attention than e^T (V_a | 1) added into the rows' state with
  its result sliced apart, at batch 1 and 8; the same peak memory). Blocks run in sequence
  (``graph_order.after``): peak O(block^2 + N d). Its cost does not depend on the values of P
  (see the package docstring for why there is no norm-dependent fast path).
"""
from keras import ops

from rnl_keras.layers.attention.blocks import (accumulate, block_starts, concat_rows, logits,
                                               matmul, split_rows)
from rnl_keras.layers.attention.reference import check_similarity, num_rows
from rnl_keras.layers.graph_order import after


def dot_attend(query, key, value):
    """y = q (k^T v) / N_k, eq. (6) computed in O(N d^2) (no N_q x N_k matrix)."""
    context = matmul(key, value, transpose_a=True)                        # (B, d, d_v)
    return ops.matmul(query, context) / ops.cast(num_rows(key), value.dtype)


def rows_forward(query, key, value, similarity, with_stats=True):
    """(y, L) of a block of query rows against all keys (``"gaussian"`` or ``"cosine"``).

    Args:
        query: (B, n, d) query rows; key: (B, N_k, d); value: (B, N_k, d_v).
        similarity: ``"gaussian"`` or ``"cosine"`` (inputs L2-normalised).
        with_stats: compute L (Gaussian); without it, one fused softmax and L = None.
    """
    scores = logits(query, key)
    if similarity == "gaussian" and not with_stats:
        return ops.matmul(ops.cast(ops.softmax(scores, axis=-1), value.dtype), value), None
    if similarity == "gaussian":
        row_max = ops.max(scores, axis=-1, keepdims=True)
        e = ops.exp(scores - row_max)
        total = ops.sum(e, axis=-1, keepdims=True)
        y = ops.matmul(ops.cast(e, value.dtype), value)
        return y / ops.cast(total, y.dtype), row_max + ops.log(total)
    weights = ops.relu(scores) / ops.cast(num_rows(key), "float32")
    return ops.matmul(ops.cast(weights, value.dtype), value), None


def chunked_forward(query, key, value, similarity, chunk, with_stats=False):
    """(y, L) computed ``chunk`` query rows at a time, in sequence (static N_q)."""
    outputs, stats = [], []
    for start in block_starts(query.shape[1], chunk):
        rows = query[:, start:start + chunk]
        if outputs:
            rows = after(rows, outputs[-1])
        y, lse = rows_forward(rows, key, value, similarity, with_stats)
        outputs.append(y)
        stats.append(lse)
    y = concat_rows(outputs)
    return y, (None if stats[0] is None else concat_rows(stats))


# -- the symmetric path ------------------------------------------------------------------------
# Row block b meets its key blocks in two phases. First as columns, in the blocks S_ab with a < b:
# a columns' state (m, acc), kept transposed so that no block is ever transposed: running max
# (B, 1, c) and accumulator (B, d_v + 1, c) whose last row is the running sum (Gaussian; m None
# and (B, d_v, c) for the cosine form). It is complete when the outer loop reaches a = b and is
# turned into the rows' state (``_columns_as_rows``), which the blocks S_bb' (b' >= b) then
# extend: running max and sum (B, c, 1) and accumulator (B, c, d_v), float32 (m and l None for
# the cosine form). So at most one accumulator per row block is alive, as (B, N, d_v) in all.

def _rescaled(state, new_max, block_sum, contrib):
    """The rows' Gaussian state after one key block whose terms are already relative to
    ``new_max``."""
    if state is None:
        return new_max, block_sum, contrib
    old_max, total, acc = state
    scale = ops.exp(old_max - new_max)
    return new_max, total * scale + block_sum, acc * scale + contrib


def _running_max(state, block_max):
    return block_max if state is None else ops.maximum(state[0], block_max)


def fold_rows(state, scores, values, similarity):
    """Fold S_ab (rows of block a along axis 1, keys of block b along axis 2) into a's rows'
    state."""
    if similarity != "gaussian":
        contrib = ops.cast(matmul(ops.cast(ops.relu(scores), values.dtype), values), "float32")
        return None, None, accumulate(None if state is None else state[2], contrib)
    block_max = ops.max(scores, axis=2, keepdims=True)
    # After the max: the softmax can then overwrite the scores it alone still reads.
    probs = ops.softmax(after(scores, block_max), axis=-1)               # exp(s - lse_b)
    block_lse = block_max - ops.log(ops.max(probs, axis=2, keepdims=True))
    new_max = _running_max(state, block_max)
    block_sum = ops.exp(block_lse - new_max)                                # (B, c_a, 1)
    contrib = ops.cast(matmul(ops.cast(probs, values.dtype), values), "float32") * block_sum
    return _rescaled(state, new_max, block_sum, contrib)


def fold_columns(state, scores, values, similarity):
    """Fold S_ab^T into block b's columns' state (rows of b along axis 2 of ``scores``).

    The products are taken transposed, ``values^T e`` (B, d_v (+ 1), c_b), so that S_ab is read
    in place. Gaussian: ``values`` is (V_a | 1), so the sums of e = exp(S_ab - m_b) over a come out
    of the aggregation GEMM as its last row, and the state is one accumulator (sums included).
    """
    if similarity != "gaussian":
        contrib = ops.cast(matmul(values, ops.cast(ops.relu(scores), values.dtype),
                                  transpose_a=True), "float32")
        return None, accumulate(None if state is None else state[1], contrib)
    new_max = _running_max(state, ops.max(scores, axis=1, keepdims=True))    # (B, 1, c_b)
    e = ops.exp(scores - new_max)
    both = ops.cast(matmul(values, ops.cast(e, values.dtype), transpose_a=True), "float32")
    if state is None:
        return new_max, both
    return new_max, state[1] * ops.exp(state[0] - new_max) + both


def _columns_as_rows(columns, gaussian):
    """The rows' state (B, c, .) equal to a complete columns' state (B, ., c) (None: None)."""
    if columns is None:
        return None
    acc = ops.swapaxes(columns[1], 1, 2)                                  # (B, c, d_v (+ 1))
    if not gaussian:
        return None, None, acc
    return ops.swapaxes(columns[0], 1, 2), acc[..., -1:], acc[..., :-1]


def symmetric_forward(points, value, similarity, block):
    """(y, L) of y = w(P, P) V from the blocks S_ab, b >= a, of S = P P^T (module docstring).

    Args:
        points: (B, N, d) P, queries and keys at once (static N); value: (B, N, d_v).
        similarity: ``"gaussian"`` or ``"cosine"`` (P L2-normalised).
        block: rows per block (``dispatch.symmetric_block_size``).
    """
    check_similarity(similarity)
    n = points.shape[1]
    starts = block_starts(n, block)
    p, v = split_rows(points, starts, block), split_rows(value, starts, block)
    count, gaussian = len(starts), similarity == "gaussian"
    rows, columns, last = [None] * count, [None] * count, None
    for a in range(count):
        rows[a], columns[a] = _columns_as_rows(columns[a], gaussian), None
        transposed = v[a]
        if gaussian and a < count - 1:                 # (V_a | 1) for the transposed blocks
            transposed = ops.concatenate([transposed, ops.ones_like(transposed[..., :1])], -1)
        for b in range(a, count):
            scores = logits(after(p[a], last), p[b])                        # S_ab, float32
            rows[a] = fold_rows(rows[a], scores, v[b], similarity)
            last = rows[a][2]
            if b != a:
                columns[b] = fold_columns(columns[b], scores, transposed, similarity)  # S_ba
                last = columns[b][1]
    if not gaussian:
        return ops.cast(concat_rows([acc / float(n) for _, _, acc in rows]), value.dtype), None
    y = concat_rows([acc / total for _, total, acc in rows])
    return ops.cast(y, value.dtype), concat_rows([m + ops.log(total) for m, total, _ in rows])
