"""Run one of the torch-side scripts with a second interpreter that has torch, read its arrays.

Used by the by-hand parity checks (``torch_parity_check.py``, ``torchvision_parity_check.py``);
PyTorch never enters the project's own venv.
"""
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_torch_side(torch_python: str, script: str, out: str) -> str:
    """Run ``tests/checkpoints/<script> <out>`` with ``torch_python``; its stdout (exit on failure)."""
    result = subprocess.run([torch_python, os.path.join(ROOT, "tests", "checkpoints", script), out],
                            cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"torch side failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def load_arrays(path: str) -> dict:
    """Every array of an ``.npz`` file, loaded."""
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
