"""Temporal Shift Module (Lin et al., TSM), as used by the RNL backbone (paper Section III-E).

fold = C // fold_div. Channels [0, fold) take the value of the NEXT frame (t+1, "shift left"),
channels [fold, 2*fold) take the PREVIOUS frame (t-1), the rest are unchanged; the frames that
fall off either end are replaced by zeros (docs/fidelity.md, 3.2). Written with slices, zero padding
and concat only (no ``roll``, which is not a TFLite builtin).
"""
import keras
from keras import ops


def temporal_shift(x, fold_div=8):
    """Shift a clip tensor ``x`` of shape (B, T, H, W, C) along T as TSM does."""
    channels = x.shape[-1]
    fold = channels // fold_div
    if fold == 0:
        return x
    zeros = ops.zeros_like(x[:, :1, ..., :fold])
    from_next = ops.concatenate([x[:, 1:, ..., :fold], zeros], axis=1)
    from_prev = ops.concatenate([zeros, x[:, :-1, ..., fold:2 * fold]], axis=1)
    return ops.concatenate([from_next, from_prev, x[..., 2 * fold:]], axis=-1)


@keras.saving.register_keras_serializable(package="rnl_keras")
class TemporalShift(keras.layers.Layer):
    """TSM shift of 1/fold_div of the channels forward and 1/fold_div backward in time.

    Accepts a clip tensor (B, T, H, W, C), or a frame batch (B*T, H, W, C) whose frames are
    grouped into clips of ``num_segments`` (TSM's layout); the output has the input's layout.
    """

    def __init__(self, num_segments, fold_div=8, **kwargs):
        super().__init__(**kwargs)
        if int(num_segments) < 1:
            raise ValueError(f"TemporalShift: num_segments must be >= 1, got {num_segments}")
        if int(fold_div) < 2:
            raise ValueError(f"TemporalShift: fold_div must be >= 2, got {fold_div}")
        self.num_segments = int(num_segments)
        self.fold_div = int(fold_div)

    def call(self, x):
        if len(x.shape) == 5:
            return temporal_shift(x, self.fold_div)
        if len(x.shape) != 4:
            raise ValueError(
                f"TemporalShift expects (B, T, H, W, C) or (B*T, H, W, C), got shape {x.shape}")
        shape = ops.shape(x)
        clip = ops.reshape(x, (-1, self.num_segments) + tuple(shape[1:]))
        return ops.reshape(temporal_shift(clip, self.fold_div), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_segments": self.num_segments,
                "fold_div": self.fold_div}
