"""``attend``: which kernel computes y = w(Q, K) V, decided by :func:`choose_path` alone.

The decision depends only on static facts of the call (similarity, static N_q and N_k, the
caller's memory bound ``query_chunk_size``, whether the keys are the queries, whether gradients
should recompute), never on the values of the tensors, so a traced or exported graph holds exactly
one path and no runtime ``cond``. Every path computes ``reference.attend``'s numbers up to float32
rounding (tests/layers/attention/).
"""
import math
from collections import namedtuple

from rnl_keras.layers.attention import kernels
from rnl_keras.layers.attention.blocks import tensorflow
from rnl_keras.layers.attention.reference import check_similarity

# Block size of the symmetric path when no ``query_chunk_size`` is given (balanced: N is split
# into ceil(N / DEFAULT_BLOCK) equal blocks, e.g. 7 x 896 at res3's N = 6272). None: one block
# (S materialised at once; the benchmarks' "materialised" reference).
DEFAULT_BLOCK = 1024
# More blocks than this make the symmetric path a sea of tiny ops: blocks are then made larger
# (within the memory bound of ``query_chunk_size``) or the row-chunked path is used.
MAX_BLOCKS = 16

Path = namedtuple("Path", ["kernel", "block"])
Path.__doc__ = """A kernel of ``PATHS`` and its block (rows per block / chunk; None: unblocked)."""

PATHS = ("dot", "rows", "chunked", "chunked_recompute", "symmetric", "symmetric_recompute")


def symmetric_block_size(n, query_chunk_size=None):
    """Rows per block of the symmetric path for N = ``n``, or None when it should not run.

    Without ``query_chunk_size``: ``DEFAULT_BLOCK`` rows, balanced. With it: blocks of at most
    that many rows, made larger (up to block^2 <= chunk * N, the chunked path's peak) when there
    would be more than ``MAX_BLOCKS``; None when even that is too many.
    """
    if query_chunk_size:
        block = min(int(query_chunk_size), n)
        if math.ceil(n / block) > MAX_BLOCKS:
            block = math.ceil(n / MAX_BLOCKS)
            if block * block > int(query_chunk_size) * n:
                return None
    else:
        block = min(DEFAULT_BLOCK or n, n)
    count = math.ceil(n / block)
    return math.ceil(n / count)   # balanced: equal blocks, the last one at most this long


def choose_path(similarity, n_queries, n_keys, query_chunk_size=None, symmetric=False,
                recompute_grad=False):
    """The kernel that computes ``attend`` for these static facts, and its block size.

    Args:
        similarity: ``"gaussian"``, ``"dot"`` or ``"cosine"``.
        n_queries, n_keys: static N_q and N_k (None when unknown).
        query_chunk_size: the caller's memory bound (rows of weights at a time), or None.
        symmetric: the keys are the queries (RNL without key sub-sampling: S = P P^T).
        recompute_grad: training wants the recomputing backward (TensorFlow only).

    Returns:
        ``Path(kernel, block)``:

        * ``dot``: eq. (6) is linear in w: q (k^T v) / N_k, never an N x N matrix;
        * ``symmetric`` (or ``symmetric_recompute``): S = P P^T, half of it, in square blocks of
          ``symmetric_block_size`` rows; taken whenever N is static and the blocks fit the bound;
        * ``chunked`` (or ``chunked_recompute``): ``query_chunk_size`` query rows at a time;
        * ``rows``: all weights at once (no bound asked, or the bound covers every row).
    """
    check_similarity(similarity)
    if similarity == "dot":
        return Path("dot", None)
    if symmetric and n_queries is not None and n_keys == n_queries:
        block = symmetric_block_size(n_queries, query_chunk_size)
        if block is not None:
            return Path("symmetric_recompute" if recompute_grad else "symmetric", block)
    if not query_chunk_size or n_queries is None or query_chunk_size >= n_queries:
        return Path("rows", None)
    if recompute_grad and n_keys is not None:
        return Path("chunked_recompute", int(query_chunk_size))
    return Path("chunked", int(query_chunk_size))


def attend(query, key, value, similarity, query_chunk_size=None, symmetric=False,
           recompute_grad=False):
    """y = w(query, key) @ value (eqs. (4)-(9)) by the kernel :func:`choose_path` picks.

    Args:
        query: (B, N_q, d); key: (B, N_k, d) (L2-normalised for ``"cosine"``); value: (B, N_k, d_v).
        similarity: ``"gaussian"``, ``"dot"`` or ``"cosine"``.
        query_chunk_size: bound the weights held at once to about this many rows x N_k.
        symmetric: ``key`` holds the same numbers as ``query``; only half of Q K^T is built, and
            the gradient reaches ``query`` (and ``value``) only.
        recompute_grad: on the blocked paths, the backward recomputes the score blocks instead of
            keeping them (``recompute``; TensorFlow backend; elsewhere plain autodiff).

    Returns:
        (B, N_q, d_v) in value's dtype.
    """
    recompute = bool(recompute_grad) and tensorflow() is not None
    path = choose_path(similarity, query.shape[1], key.shape[1], query_chunk_size, symmetric,
                       recompute)
    if path.kernel == "dot":
        return kernels.dot_attend(query, key, value)
    if path.kernel == "rows":
        return kernels.rows_forward(query, key, value, similarity, with_stats=False)[0]
    if path.kernel == "chunked":
        return kernels.chunked_forward(query, key, value, similarity, path.block)[0]
    if path.kernel == "symmetric":
        return kernels.symmetric_forward(query, value, similarity, path.block)[0]
    from rnl_keras.layers.attention import recompute as recomputing   # imports TensorFlow

    if path.kernel == "symmetric_recompute":
        return recomputing.symmetric_attend(query, value, similarity, path.block)
    return recomputing.chunked_attend(query, key, value, similarity, path.block)
