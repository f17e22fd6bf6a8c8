"""rnl-keras: region-based non-local networks (RNL) for video classification in Keras 3.

Pins live in ``constraints.txt`` only; this file reads them so the two never drift.
Set ``RNL_KERAS_GPU=1`` at install time to depend on ``tensorflow[and-cuda]`` instead of
``tensorflow-cpu`` (``make install GPU=1``).
"""
import os
import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent


def _pins():
    pins = {}
    for line in (HERE / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = f"{name.strip()}=={version.strip()}"
    return pins


PINS = _pins()
GPU = os.environ.get("RNL_KERAS_GPU", "") not in ("", "0")

runtime = ["keras", "numpy", "absl-py", "av", "tensorboard", "pillow", "h5py"]
tf_req = "tensorflow[and-cuda]==" + PINS["tensorflow"].split("==")[1] if GPU else PINS["tensorflow-cpu"]

setup(
    name="rnl-keras",
    version="0.1.0",
    description="Region-based non-local operation (RNL) for video classification, Keras 3",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["rnl_keras", "rnl_keras.*"]),
    package_data={"rnl_keras.data": ["kinetics400_classes.txt"]},
    install_requires=[tf_req] + [PINS[n] for n in runtime],
    extras_require={
        "gpu": ["tensorflow[and-cuda]==" + PINS["tensorflow"].split("==")[1]],
        "tflite": [PINS["ai-edge-litert"]],
        "dev": [PINS[n] for n in ("pytest", "pytest-timeout", "pytest-xdist", "ai-edge-litert")],
        # PyTorch is only needed to *read* the authors' .pth.tar files (pipelines/convert_checkpoint.py).
        "torch": ["torch"],
    },
)
