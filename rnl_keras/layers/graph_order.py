"""Sequencing of independent ops in a TF graph, so that memory-heavy steps run one at a time.

TensorFlow's executor runs every op whose inputs are ready, in parallel: blocks of an attention
matrix, or the taps of a convolution, that do not depend on each other would all be alive at once.
``after(x, dependency)`` makes the consumer of ``x`` wait for ``dependency``; the result is the
same tensor. Eagerly (and on other backends) ops already run in program order and it is a no-op.
"""
import keras


def after(x, dependency):
    """Return ``x`` ordered after ``dependency`` in a TF graph (identity otherwise)."""
    if dependency is None or keras.backend.backend() != "tensorflow":
        return x
    import tensorflow as tf

    if tf.executing_eagerly():
        return x
    with tf.control_dependencies([dependency]):
        return tf.identity(x)
