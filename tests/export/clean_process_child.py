"""Child process of the export round-trip test: TensorFlow only, rnl_keras cannot be imported.

argv: SAVED_MODEL_DIR INPUTS_NPZ OUTPUTS_NPZ. Feeds ``float_clips`` to serving_float and every
``uint8_<i>`` array to serving_default, writes the outputs and the signatures' input specs.
"""
import importlib.abc
import json
import os
import sys


class _BlockRnlKeras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "rnl_keras" or name.startswith("rnl_keras."):
            raise ImportError(f"{name} is blocked in this process")
        return None


sys.meta_path.insert(0, _BlockRnlKeras())
here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(os.path.dirname(here))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) not in (here, repo)]

try:
    import rnl_keras  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("rnl_keras was importable in the clean process")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

saved_dir, inputs_path, outputs_path = sys.argv[1:4]
loaded = tf.saved_model.load(saved_dir)
inputs = np.load(inputs_path)
out = {}
specs = {}
for name, fn in loaded.signatures.items():
    _, kw = fn.structured_input_signature
    specs[name] = {k: {"dtype": v.dtype.name, "shape": v.shape.as_list()} for k, v in kw.items()}
    specs[name]["outputs"] = {k: {"dtype": v.dtype.name, "shape": v.shape.as_list()}
                              for k, v in fn.structured_outputs.items()}
res = loaded.signatures["serving_float"](clip=tf.constant(inputs["float_clips"]))
for k, v in res.items():
    out[f"float/{k}"] = v.numpy()
i = 0
while f"uint8_{i}" in inputs:
    res = loaded.signatures["serving_default"](frames=tf.constant(inputs[f"uint8_{i}"]))
    for k, v in res.items():
        out[f"uint8_{i}/{k}"] = v.numpy()
    i += 1
out = {k: (np.char.decode(v.astype(bytes), "utf-8") if v.dtype == object else v)
       for k, v in out.items()}
np.savez(outputs_path, **out)
leaked = sorted(m for m in sys.modules if m == "rnl_keras" or m.startswith("rnl_keras."))
print(json.dumps({"specs": specs, "rnl_keras_modules": leaked}))
