"""The fixed input adapter that lets Caffe-convention ResNet-50 weights see the pipeline's input.

The data pipeline, the SavedModel's serving signatures and TFLite clients all feed RGB frames
normalised as ``(x / 255 - mean) / std`` with the ImageNet mean / std of
:mod:`rnl_keras.imagenet` (torchvision's convention, which the paper's backbone was trained in).
``keras.applications`` ResNet-50 weights were converted from Caffe and expect BGR frames on
[0, 255] minus the per-channel mean (103.939, 116.779, 123.68), no std. A model built for such
weights (``tsm_resnet50(..., input_convention="caffe")``) starts with :class:`CaffeInputAdapter`,
which maps one to the other exactly:

    caffe[..., k] = 255 * (std[2 - k] * x[..., 2 - k] + mean[2 - k]) - caffe_mean[k],  k = B, G, R

It has no weights (nothing to train or to forget), serialises with its constants, and is written
with slices, a concatenation, a multiply and an add: TFLite builtins only. It computes in float32
even under a mixed precision policy (the next layer casts).
"""
import keras
import numpy as np
from keras import ops

from rnl_keras.imagenet import IMAGENET_MEAN, IMAGENET_STD

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
INPUT_CONVENTIONS = ("torchvision", "caffe")


@keras.saving.register_keras_serializable(package="rnl_keras")
class CaffeInputAdapter(keras.layers.Layer):
    """RGB ``(x / 255 - mean) / std`` input -> Caffe BGR ``x_bgr - caffe_mean`` on [0, 255].

    Args:
        mean, std: the RGB normalisation of the incoming tensor, on [0, 1] (default ImageNet's).
        caffe_mean: the BGR mean the weights expect subtracted, on [0, 255].
    Input / output: ``(..., 3)`` tensors of any rank; the output is float32.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, caffe_mean=CAFFE_BGR_MEAN,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.caffe_mean = tuple(float(v) for v in caffe_mean)
        if not (len(self.mean) == len(self.std) == len(self.caffe_mean) == 3):
            raise ValueError(f"mean, std and caffe_mean need 3 values each, got {self.mean}, "
                             f"{self.std}, {self.caffe_mean}")
        mean64, std64 = np.asarray(self.mean), np.asarray(self.std)
        # BGR order: channel k of the output comes from channel 2 - k of the input.
        self._scale = (255.0 * std64[::-1]).astype("float32")
        self._offset = (255.0 * mean64[::-1] - np.asarray(self.caffe_mean)).astype("float32")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        bgr = ops.concatenate([x[..., 2:3], x[..., 1:2], x[..., 0:1]], axis=-1)
        return bgr * ops.convert_to_tensor(self._scale) + ops.convert_to_tensor(self._offset)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std), caffe_mean=list(self.caffe_mean))
        return config


def input_convention_of(model) -> str:
    """``"caffe"`` when ``model`` holds a :class:`CaffeInputAdapter`, else ``"torchvision"``."""
    return "caffe" if any(isinstance(l, CaffeInputAdapter) for l in model.layers) else "torchvision"
