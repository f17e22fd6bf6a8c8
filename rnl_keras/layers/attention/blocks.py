"""Row-block bookkeeping shared by the blocked kernels and the recomputing backward.

A (B, N, c) tensor is cut into row blocks t[:, s:s + size]; per-block results are accumulated and
concatenated back. ``matmul`` folds transposes of the last two axes into the GEMM on TensorFlow
(``tf.linalg.matmul``'s flags), so S_ab^T is never copied.
"""
import keras
from keras import ops


def tensorflow():
    """The ``tensorflow`` module on the TensorFlow backend, else None."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf
    return None


def matmul(a, b, transpose_a=False, transpose_b=False):
    """Batched a @ b with optional transposes of the last two axes (fused into the GEMM on TF)."""
    tf = tensorflow()
    if tf is not None:
        return tf.linalg.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    if transpose_a:
        a = ops.swapaxes(a, -1, -2)
    if transpose_b:
        b = ops.swapaxes(b, -1, -2)
    return ops.matmul(a, b)


def logits(query, key):
    """q_i . k_j of two row blocks, float32 (B, n_q, n_k)."""
    return ops.cast(matmul(query, key, transpose_b=True), "float32")


def block_starts(n, size):
    """Start rows of the blocks of ``size`` rows covering ``n`` rows."""
    return list(range(0, n, size))


def split_rows(t, starts, size):
    """The row blocks t[:, s:s + size] for s in ``starts`` (Nones for ``t = None``)."""
    if t is None:
        return [None] * len(starts)
    return [t[:, s:s + size] for s in starts]


def accumulate(total, term):
    """total + term, or term when nothing has been accumulated yet (``total = None``)."""
    return term if total is None else total + term


def concat_rows(blocks):
    """The row blocks joined back along axis 1."""
    return blocks[0] if len(blocks) == 1 else ops.concatenate(blocks, axis=1)
