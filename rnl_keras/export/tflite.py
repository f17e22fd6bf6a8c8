"""TFLite conversion (float32 and dynamic-range quantised) and a small interpreter wrapper.

The converted function is the float-clip one: ``clip`` float32 ``(1, T, S, S, 3)`` (already
normalised) -> ``probabilities`` float32 ``(1, K)``. Only TFLite builtin ops are allowed
(``OpsSet.TFLITE_BUILTINS``): a model that needs a TF op (Flex) fails the conversion with a
:class:`TFLiteExportError` instead of silently producing a Flex model.

The Keras variables are frozen into constants before conversion: with Keras 3 on TF 2.21 the
converter's own variable freezing (``from_concrete_functions(..., trackable)`` and
``from_saved_model``) drops them and the .tflite file returns NaN (measured here).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


class TFLiteExportError(RuntimeError):
    """The model could not be converted to a builtin-ops TFLite model."""


def _frozen_float_function(model, num_frames: int, image_size: int):
    from tensorflow.python.framework.convert_to_constants import \
        convert_variables_to_constants_v2  # noqa: PLC0415 - TF's own freezer, no public alias

    @tf.function
    def probabilities(clip):
        logits = model(clip, training=False)
        return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)}

    spec = tf.TensorSpec([1, num_frames, image_size, image_size, 3], tf.float32, name="clip")
    return convert_variables_to_constants_v2(probabilities.get_concrete_function(spec))


def convert_to_tflite(model, num_frames: int, image_size: int, quantize: bool = False,
                      frozen=None) -> bytes:
    """Convert ``model`` (float clip -> logits) to a TFLite flatbuffer returning probabilities.

    Args:
      quantize: dynamic-range quantisation (``Optimize.DEFAULT``, int8 weights, float activations).
      frozen: a frozen concrete function from an earlier call (see :func:`freeze`), to convert the
        float and the quantised model from one trace.
    """
    frozen = frozen if frozen is not None else freeze(model, num_frames, image_size)
    # The frozen function holds no variables; an empty trackable selects the current (non
    # deprecated) conversion path without letting the converter touch the Keras variables.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        return converter.convert()
    except Exception as e:  # noqa: BLE001 - ConverterError and friends
        kind = "dynamic-range quantised" if quantize else "float32"
        raise TFLiteExportError(
            f"{kind} TFLite conversion of {getattr(model, 'name', 'model')!r} with builtin ops only "
            f"failed ({type(e).__name__}): {e}") from e


def freeze(model, num_frames: int, image_size: int):
    """The model's float-clip probabilities function with its weights frozen into constants."""
    return _frozen_float_function(model, int(num_frames), int(image_size))


class TFLiteClassifier:
    """Runs a .tflite video classifier exported by :mod:`rnl_keras.export` (batch 1 per invoke)."""

    def __init__(self, model_path: str | None = None, model_content: bytes | None = None,
                 num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
        except ImportError:  # pragma: no cover - fallback for environments without ai-edge-litert
            Interpreter = tf.lite.Interpreter  # noqa: N806
        self.path = model_path
        try:
            self.interpreter = Interpreter(model_path=model_path, model_content=model_content,
                                           num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"cannot load TFLite model {model_path or '<bytes>'}: "
                             f"{type(e).__name__}: {e}") from None
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"TFLite model {model_path}: expected 1 input and 1 output, got "
                             f"{len(inputs)} and {len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        shape = [int(d) for d in self._in["shape"]]
        if len(shape) != 5 or shape[-1] != 3 or shape[2] != shape[3]:
            raise ValueError(f"TFLite model {model_path}: input shape {shape} is not "
                             "(1, T, S, S, 3)")
        self.num_frames, self.image_size = shape[1], shape[2]
        self.num_classes = int(self._out["shape"][-1])

    def probabilities(self, clips: np.ndarray) -> np.ndarray:
        """float32 ``(N, T, S, S, 3)`` normalised clips -> ``(N, K)`` probabilities."""
        clips = np.asarray(clips, dtype=np.float32)
        if clips.ndim == 4:
            clips = clips[None]
        want = (self.num_frames, self.image_size, self.image_size, 3)
        if clips.shape[1:] != want:
            raise ValueError(f"TFLite model {self.path}: clips of shape {clips.shape[1:]}, expected "
                             f"{want}")
        out = []
        for clip in clips:
            self.interpreter.set_tensor(self._in["index"], clip[None])
            self.interpreter.invoke()
            out.append(np.array(self.interpreter.get_tensor(self._out["index"])[0]))
        return np.stack(out).astype(np.float32)
