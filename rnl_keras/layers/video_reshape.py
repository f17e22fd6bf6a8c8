"""Reshapes between clip tensors (B, T, H, W, C) and frame batches (B*T, H, W, C).

The TSM backbone is a 2D ResNet applied to every frame, so inside the model a clip travels as a
batch of frames; attention blocks that look across time regroup the frames into clips first.
"""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rnl_keras")
class ClipToFrames(keras.layers.Layer):
    """(B, T, H, W, C) -> (B*T, H, W, C)."""

    def call(self, x):
        shape = ops.shape(x)
        return ops.reshape(x, (-1,) + tuple(shape[2:]))

    def compute_output_shape(self, input_shape):
        b, t = input_shape[0], input_shape[1]
        bt = None if b is None or t is None else b * t
        return (bt,) + tuple(input_shape[2:])


@keras.saving.register_keras_serializable(package="rnl_keras")
class FramesToClip(keras.layers.Layer):
    """(B*T, H, W, C) -> (B, T, H, W, C) for a fixed number of frames T."""

    def __init__(self, num_frames, **kwargs):
        super().__init__(**kwargs)
        if int(num_frames) < 1:
            raise ValueError(f"FramesToClip: num_frames must be >= 1, got {num_frames}")
        self.num_frames = int(num_frames)

    def call(self, x):
        shape = ops.shape(x)
        return ops.reshape(x, (-1, self.num_frames) + tuple(shape[1:]))

    def compute_output_shape(self, input_shape):
        bt = input_shape[0]
        b = None if bt is None else bt // self.num_frames
        return (b, self.num_frames) + tuple(input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "num_frames": self.num_frames}


@keras.saving.register_keras_serializable(package="rnl_keras")
class TemporalAverage(keras.layers.Layer):
    """Consensus of TSN/TSM: (B*T, K) per-frame scores -> (B, K) clip scores, mean over T."""

    def __init__(self, num_frames, **kwargs):
        super().__init__(**kwargs)
        self.num_frames = int(num_frames)

    def call(self, x):
        shape = ops.shape(x)
        x = ops.reshape(x, (-1, self.num_frames) + tuple(shape[1:]))
        return ops.mean(x, axis=1)

    def compute_output_shape(self, input_shape):
        bt = input_shape[0]
        return (None if bt is None else bt // self.num_frames,) + tuple(input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "num_frames": self.num_frames}
