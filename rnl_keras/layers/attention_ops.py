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
computed as q (k^T v) / N_k: O(N d^2) arithmetic and no N x N matrix at all. In training, plain
autodiff keeps every weight block for the backward pass (O(N_q * N_k) again);
``recompute_grad=True`` recomputes them in the backward instead (``attention_recompute``), so the
blocked paths stay O(block * N_k + N d) with gradients too.

Speed (all exact up to float32 rounding):

* Gaussian, rows against all keys (key sub-sampling, NL): one fused softmax op (oneDNN's on CPU,
  about 2x faster than max, sub + exp and sum as separate ops), then w V. With the statistics the
  recomputing backward needs, e_ij = exp(s_ij - max_j s_ij) and y_i = (sum_j e_ij v_j) / sum_j e_ij.
* ``symmetric=True`` (queries and keys are the same tensor, as in the RNL block without key
  sub-sampling: S = P P^T): S is built in square blocks S_ab = P_a P_b^T for b >= a only and each
  block serves both its row block (S_ab) and, transposed, the row block b (S_ba = S_ab^T). That
  halves the Q K^T product. The Gaussian form then runs as a streaming ("online") softmax over the
  key blocks: every row block keeps a running max m, a running sum l and a float32 accumulator
  y, rescaled by exp(m_old - m_new) when the max grows, and is divided by l at the end. Blocks
  run in sequence, so the peak is O(block^2 + N d), below ``query_chunk_size * N_k`` whenever
  ``query_chunk_size`` is set (the block is chosen so). Made only of matmul, softmax, exp, log,
  max, slices and concat: TFLite builtins. A block's rows (S_ab) take the fused softmax,
  w = exp(s - lse_b) with lse_b = max_b - log(max w), and add (w V_b) exp(lse_b - m) to y and
  exp(lse_b - m) to l; its columns (S_ab^T) take exp(S_ab - m_b^T), with their sums from the GEMM
  as the last column of e^T (V_a | 1).
* Symmetric Gaussian, float32: fixed offsets instead of running maxima. With h_i = |p_i|^2 / 2,
  s_ij - h_i - h_j = -|p_i - p_j|^2 / 2 <= 0, so E_ab = exp(S_ab - h_a - h_b^T) never overflows,
  is itself symmetric and serves both pairs (a, b) and (b, a): one exp per block pair where the
  running-max form needs two, and no max, sum or rescaling passes. The offsets ride in the score
  GEMM as two extra columns, (P_a | -h_a | 1) (P_b | 1 | -h_b)^T, and the row sums in the
  aggregation GEMM as one, E_ab (w_b V_b | w_b) with w_j = exp(h_j - c), c = max_j h_j of the
  clip: y_i = sum_j E_ij w_j v_j / sum_j E_ij w_j = sum_j exp(s_ij) v_j / sum_j exp(s_ij).
  Every block is summed in the same scale. Row i's largest term is exp(m_i - h_i - c) >=
  exp(h_i - c) (m_i >= s_ii = 2 h_i), so nothing that matters underflows while h spans at most
  ``FIXED_OFFSET_MAX_SPREAD`` = 60 within every clip of the batch (its largest term is then
  >= e^-60 and terms 1e-7 of it, e^-76, are still normal floats); otherwise the running-max form
  runs (one ``cond`` on the batch; an IF op in TFLite). -12% time at res3 (N = 6272, batch 8).
  ``fixed_offsets=False`` leaves it out (no cond in the graph). Trained features can spread far
  wider (two trained demo models: h spans 3e4 to 6e5 within a clip): they always take the
  running-max form.
"""
import math

import keras
from keras import ops

from rnl_keras.layers.graph_order import after

SIMILARITIES = ("gaussian", "dot", "cosine")

# Block size of the symmetric path when no ``query_chunk_size`` is given (balanced: N is split
# into ceil(N / DEFAULT_BLOCK) equal blocks, e.g. 7 x 896 at res3's N = 6272).
DEFAULT_BLOCK = 1024
# More blocks than this make the symmetric path a sea of tiny ops: blocks are then made larger
# (within the memory bound of ``query_chunk_size``) or the row-chunked path is used.
MAX_BLOCKS = 16
# The fixed-offset Gaussian path is taken when h_i = |p_i|^2 / 2 spans at most this within every
# clip (see the module docstring).
FIXED_OFFSET_MAX_SPREAD = 60.0


def l2_normalize(x, epsilon=1e-12):
    """x / max(|x|_2, eps) over the last axis (PyTorch ``F.normalize``)."""
    norm = ops.sqrt(ops.sum(ops.square(ops.cast(x, "float32")), axis=-1, keepdims=True))
    return x / ops.cast(ops.maximum(norm, epsilon), x.dtype)


def num_rows(x):
    """Static number of rows (axis 1) when known, else a scalar tensor."""
    return x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]


def _tf():
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf
    return None


def _matmul(a, b, transpose_a=False, transpose_b=False):
    """Batched a @ b with optional transposes of the last two axes (fused into the GEMM on TF)."""
    tf = _tf()
    if tf is not None:
        return tf.linalg.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    if transpose_a:
        a = ops.swapaxes(a, -1, -2)
    if transpose_b:
        b = ops.swapaxes(b, -1, -2)
    return ops.matmul(a, b)


def _logits(query, key):
    return ops.cast(_matmul(query, key, transpose_b=True), "float32")


def attention_weights(query, key, similarity):
    """w_ij of the chosen query rows, float32 (B, N_q, N_k). Cosine expects normalised inputs."""
    logits = _logits(query, key)
    if similarity == "gaussian":
        return ops.softmax(logits, axis=-1)
    n_keys = ops.cast(num_rows(key), "float32")
    if similarity == "dot":
        return logits / n_keys
    if similarity == "cosine":
        return ops.relu(logits) / n_keys
    raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")


def query_rows_weights(queries, keys, query_positions, similarity):
    """w_ij of the query rows at ``query_positions`` (indices into axis 1): (B, Q, N_k) float32."""
    rows = ops.take(queries, ops.convert_to_tensor(query_positions, "int32"), axis=1)
    return attention_weights(rows, keys, similarity)


def _rows_forward(query, key, value, similarity, with_stats=True):
    """(y, L) for a block of query rows against all keys (the N_q x N_k weights materialised).

    L (B, N_q, 1) float32 is the Gaussian log-sum-exp L_i = m_i + log(sum_j e_ij) kept for the
    recomputing backward (``attention_recompute``); None for the cosine form or without
    ``with_stats``. Without it the Gaussian weights come from one fused softmax (oneDNN's on CPU:
    about 2x faster than max, sub + exp and sum as separate ops).
    """
    logits = _logits(query, key)
    if similarity == "gaussian" and not with_stats:
        return ops.matmul(ops.cast(ops.softmax(logits, axis=-1), value.dtype), value), None
    if similarity == "gaussian":
        row_max = ops.max(logits, axis=-1, keepdims=True)
        e = ops.exp(logits - row_max)
        total = ops.sum(e, axis=-1, keepdims=True)
        y = ops.matmul(ops.cast(e, value.dtype), value)
        return y / ops.cast(total, y.dtype), row_max + ops.log(total)
    weights = ops.relu(logits) / ops.cast(num_rows(key), "float32")
    return ops.matmul(ops.cast(weights, value.dtype), value), None


def _rows_attend(query, key, value, similarity):
    """y for a block of query rows against all keys (the N_q x N_k weights materialised)."""
    return _rows_forward(query, key, value, similarity, with_stats=False)[0]


def _symmetric_blocks(n, query_chunk_size):
    """Block size of the symmetric path, or None when the row-chunked path should be used."""
    if query_chunk_size:
        block = min(int(query_chunk_size), n)
        if math.ceil(n / block) > MAX_BLOCKS:
            # Larger blocks keep the peak under query_chunk_size * N (block^2 <= chunk * N).
            block = math.ceil(n / MAX_BLOCKS)
            if block * block > int(query_chunk_size) * n:
                return None
    else:
        block = min(DEFAULT_BLOCK or n, n)   # DEFAULT_BLOCK = None: one block, S materialised
    count = math.ceil(n / block)
    return math.ceil(n / count)  # balanced: equal blocks, the last one at most this long


def _symmetric_forward(points, value, similarity, block, fixed_offsets=True):
    """(y, L): y = w(P, P) V using S_ba = S_ab^T, only the blocks on and above the diagonal built.

    L (B, N, 1) float32 is the Gaussian log-sum-exp m_i + log(l_i) of every row (kept for the
    recomputing backward of ``attention_recompute``); None for the cosine form. float32 Gaussian
    inputs take the fixed-offset path when ``fixed_offsets`` and its condition holds (module
    docstring).
    """
    if (similarity == "gaussian" and fixed_offsets
            and keras.backend.standardize_dtype(points.dtype) == "float32"):
        half_norms = 0.5 * ops.sum(ops.square(points), axis=-1, keepdims=True)    # h, (B, N, 1)
        spread = ops.max(ops.max(half_norms, axis=1) - ops.min(half_norms, axis=1))
        return ops.cond(spread <= FIXED_OFFSET_MAX_SPREAD,
                        lambda: _fixed_offset_forward(points, value, half_norms, block),
                        lambda: _running_max_forward(points, value, similarity, block))
    return _running_max_forward(points, value, similarity, block)


def _fixed_offset_forward(points, value, half_norms, block):
    """(y, L) of the symmetric Gaussian form with the fixed offsets h_i = |p_i|^2 / 2.

    E_ab = exp(S_ab - h_a - h_b^T) = exp(-|p_i - p_j|^2 / 2) once per block pair b >= a, and
    y_i = sum_j E_ij w_j v_j / sum_j E_ij w_j with w_j = exp(h_j - c) (module docstring; exact
    only while h spans at most ``FIXED_OFFSET_MAX_SPREAD`` in each clip: the caller checks).
    L_i = log(sum_j E_ij w_j) + h_i + c = log(sum_j exp(s_ij)).
    """
    n, dv = points.shape[1], value.shape[-1]
    top = ops.max(half_norms, axis=1, keepdims=True)                        # c, (B, 1, 1)
    weights = ops.exp(half_norms - top)                                     # w, (B, N, 1)
    ones = ops.ones_like(half_norms)
    left = ops.concatenate([points, -half_norms, ones], axis=-1)            # (P | -h | 1)
    right = ops.concatenate([points, ones, -half_norms], axis=-1)           # (P | 1 | -h)
    weighted = ops.concatenate([ops.cast(value, "float32") * weights, weights], axis=-1)
    starts = list(range(0, n, block))
    lefts, rights, values = (_split(t, starts, block) for t in (left, right, weighted))
    acc = [None] * len(starts)
    last = None
    for a in range(len(starts)):
        for b in range(a, len(starts)):
            kernel = ops.exp(_matmul(after(lefts[a], last), rights[b], transpose_b=True))
            acc[a] = _add(acc[a], _matmul(kernel, values[b]))                # rows of block a
            if b != a:
                acc[b] = _add(acc[b], _matmul(kernel, values[a], transpose_a=True))  # block b
            last = acc[b]
    acc = _concat(acc)
    total = acc[..., dv:]
    y = acc[..., :dv] / total
    return ops.cast(y, value.dtype), ops.log(total) + half_norms + top


def _running_max_forward(points, value, similarity, block):
    """(y, L) of the symmetric path as a streaming softmax with running row maxima."""
    n = points.shape[1]
    starts = list(range(0, n, block))
    p_blocks, v_blocks = _split(points, starts, block), _split(value, starts, block)
    count = len(starts)
    gaussian = similarity == "gaussian"
    # Per row block: running max m (B, c, 1), running sum l (B, c, 1), accumulator acc (B, c, dv);
    # all float32.
    m, l, acc = [None] * count, [None] * count, [None] * count
    last = None

    def update(i, scores, v_other, transposed):
        """Fold the scores of row block i against one key block (S or S^T) into its state."""
        nonlocal last
        if gaussian and not transposed:
            # Rows along the last axis: oneDNN's fused softmax gives p = exp(s - lse_b) (its exp
            # runs ~2x faster than a separate max, sub + exp, sum); lse_b = max_b - log(max p).
            # The block then adds (p V) exp(lse_b - m) to acc and exp(lse_b - m) to l.
            block_max = ops.max(scores, axis=2, keepdims=True)
            # After the max: the softmax can then overwrite the scores it alone still reads.
            probs = ops.softmax(after(scores, block_max), axis=-1)
            block_lse = block_max - ops.log(ops.max(probs, axis=2, keepdims=True))
            new_max = block_max if m[i] is None else ops.maximum(m[i], block_max)
            block_sum = ops.exp(block_lse - new_max)                     # (B, c_i, 1)
            contrib = ops.cast(_matmul(ops.cast(probs, v_other.dtype), v_other),
                               "float32") * block_sum
        elif gaussian:
            # Rows along axis 1: e = exp(S - m^T); the row sums come out of the GEMM as the last
            # column of e^T (V | 1) (``v_other`` comes with the ones column).
            block_max = ops.swapaxes(ops.max(scores, axis=1, keepdims=True), 1, 2)
            new_max = block_max if m[i] is None else ops.maximum(m[i], block_max)
            e = ops.exp(scores - ops.swapaxes(new_max, 1, 2))
            both = ops.cast(_matmul(ops.cast(e, v_other.dtype), v_other, transpose_a=True),
                            "float32")
            contrib, block_sum = both[..., :-1], both[..., -1:]
        else:
            contrib = ops.cast(_matmul(ops.cast(ops.relu(scores), v_other.dtype), v_other,
                                       transpose_a=transposed), "float32")
        if gaussian:
            if m[i] is None:
                acc[i], l[i] = contrib, block_sum
            else:
                scale = ops.exp(m[i] - new_max)
                acc[i], l[i] = acc[i] * scale + contrib, l[i] * scale + block_sum
            m[i] = new_max
        else:
            acc[i] = _add(acc[i], contrib)
        last = acc[i]

    for a in range(count):
        v_a = v_blocks[a]
        if gaussian and a < count - 1:    # (V_a | 1) for the transposed blocks of this row
            v_a = ops.concatenate([v_a, ops.ones_like(v_a[..., :1])], axis=-1)
        for b in range(a, count):
            scores = _logits(after(p_blocks[a], last), p_blocks[b])   # S_ab, float32
            update(a, scores, v_blocks[b], transposed=False)
            if b != a:
                update(b, scores, v_a, transposed=True)              # S_ba = S_ab^T
    if gaussian:
        outputs = [acc[i] / l[i] for i in range(count)]
        stats = _concat([m[i] + ops.log(l[i]) for i in range(count)])
    else:
        n_keys = float(n)
        outputs = [acc[i] / n_keys for i in range(count)]
        stats = None
    return ops.cast(_concat(outputs), value.dtype), stats


def _concat(blocks):
    return blocks[0] if len(blocks) == 1 else ops.concatenate(blocks, axis=1)


def _split(t, starts, size):
    """The row blocks t[:, s:s + size] for s in ``starts`` (Nones for ``t = None``)."""
    if t is None:
        return [None] * len(starts)
    return [t[:, s:s + size] for s in starts]


def _add(total, term):
    """total + term, or term when nothing has been accumulated yet (``total = None``)."""
    return term if total is None else total + term


def _symmetric_attend(points, value, similarity, block, fixed_offsets=True):
    """y = w(P, P) V using S_ba = S_ab^T: only the blocks on and above the diagonal are built."""
    return _symmetric_forward(points, value, similarity, block, fixed_offsets)[0]


def attend(query, key, value, similarity, query_chunk_size=None, symmetric=False,
           recompute_grad=False, fixed_offsets=True):
    """y = w(query, key) @ value, chunked over query rows when ``query_chunk_size`` is set.

    ``symmetric=True`` states that ``key`` holds the same numbers as ``query`` (RNL without key
    sub-sampling); the Gaussian and cosine forms then build only half of Q K^T, in square blocks
    (see the module docstring), with the same result up to float32 rounding. The gradient then
    reaches ``query`` (and ``value``) only.

    ``recompute_grad=True`` (TensorFlow backend): on the blocked paths of the Gaussian and cosine
    forms (symmetric blocks, or row chunks with ``query_chunk_size`` < N_q) the backward pass
    recomputes the score blocks instead of keeping them (``attention_recompute``), so training
    memory stays O(block * N_k + N d) too. Same forward numbers; elsewhere it changes nothing.

    ``fixed_offsets`` (symmetric Gaussian, float32): allow the fixed-offset path where the norms
    permit it (module docstring); ``False`` keeps the graph free of its ``cond``.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if similarity == "dot":
        context = _matmul(key, value, transpose_a=True)  # (B, d, dv)
        return ops.matmul(query, context) / ops.cast(num_rows(key), value.dtype)
    recompute = recompute_grad and _tf() is not None
    n_queries = query.shape[1]
    if symmetric and n_queries is not None and key.shape[1] == n_queries:
        block = _symmetric_blocks(n_queries, query_chunk_size)
        if block is not None:
            if recompute:
                from rnl_keras.layers import attention_recompute

                return attention_recompute.symmetric_attend(query, value, similarity, block,
                                                            fixed_offsets)
            return _symmetric_attend(query, value, similarity, block, fixed_offsets)
    if not query_chunk_size or n_queries is None or query_chunk_size >= n_queries:
        return _rows_attend(query, key, value, similarity)
    if recompute and key.shape[1] is not None:
        from rnl_keras.layers import attention_recompute

        return attention_recompute.chunked_attend(query, key, value, similarity,
                                                  int(query_chunk_size))
    return _chunked_attend(query, key, value, similarity, query_chunk_size)


def _chunked_attend(query, key, value, similarity, query_chunk_size, with_stats=False):
    """y (and, with ``with_stats``, the rows' L or None) computed ``query_chunk_size`` rows at a
    time, in sequence."""
    outputs, stats = [], []
    for start in range(0, query.shape[1], query_chunk_size):
        rows = query[:, start:start + query_chunk_size]
        if outputs:
            rows = after(rows, outputs[-1])
        y, lse = _rows_forward(rows, key, value, similarity, with_stats)
        outputs.append(y)
        stats.append(lse)
    y = ops.concatenate(outputs, axis=1)
    if not with_stats:
        return y
    return y, (None if stats[0] is None else _concat(stats))
