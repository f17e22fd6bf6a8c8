"""CaffeInputAdapter: the pipeline's RGB (x/255 - mean)/std input -> keras.applications' Caffe
input (BGR, 0-255, minus (103.939, 116.779, 123.68)), exactly, serialisably, in TFLite builtins."""
import keras
import numpy as np
import tensorflow as tf

from rnl_keras.models import CaffeInputAdapter, input_convention_of, tsm_resnet50

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
CAFFE = np.array([103.939, 116.779, 123.68])


def _pipeline_input(u8):
    return ((u8.astype(np.float32) / 255.0 - MEAN.astype(np.float32))
            / STD.astype(np.float32)).astype(np.float32)


def test_maps_pipeline_input_to_keras_preprocess_input(rng):
    u8 = rng.integers(0, 256, (2, 3, 5, 7, 3), dtype=np.uint8)
    out = np.asarray(CaffeInputAdapter()(_pipeline_input(u8)))
    want = keras.applications.resnet50.preprocess_input(u8.astype(np.float32))
    np.testing.assert_allclose(out, want, rtol=0, atol=2e-4)               # float32 rounding
    # and the float64 formula: BGR channel k from RGB channel 2 - k
    exact = u8.astype(np.float64)[..., ::-1] - CAFFE
    assert np.abs(out - exact).max() < 2e-4
    assert out.dtype == np.float32


def test_serialises_and_rebuilds(rng):
    layer = CaffeInputAdapter(name="caffe_input")
    clone = CaffeInputAdapter.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config() and not clone.trainable
    assert not clone.weights
    model = tsm_resnet50(3, num_frames=2, image_size=32, attention="none",
                         stage_blocks=(1, 1, 1, 1), base_width=8, input_convention="caffe")
    assert input_convention_of(model) == "caffe"
    restored = keras.Model.from_config(model.get_config())
    assert input_convention_of(restored) == "caffe"
    assert input_convention_of(tsm_resnet50(3, num_frames=2, image_size=32, attention="none",
                                            stage_blocks=(1, 1, 1, 1), base_width=8)) == \
        "torchvision"


def test_mixed_precision_keeps_float32(rng):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    layer = CaffeInputAdapter()
    x = rng.normal(0, 1, (1, 4, 4, 3)).astype("float32")
    out = layer(x)
    assert layer.compute_dtype == "float32" and out.dtype == "float32"
    exact = (x.astype(np.float64) * STD + MEAN)[..., ::-1] * 255 - CAFFE
    assert np.abs(np.asarray(out) - exact).max() < 1e-3


def test_tflite_builtins(rng):
    inputs = keras.Input((2, 6, 6, 3), batch_size=1)
    model = keras.Model(inputs, CaffeInputAdapter()(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    x = rng.normal(0, 1, (1, 2, 6, 6, 3)).astype("float32")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, np.asarray(model(x)), rtol=0, atol=1e-4)
