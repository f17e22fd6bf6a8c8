"""Read the frames a clip needs from a frame folder (TSM / Something-Something V1 layout).

Frame ``i`` (0-based) of a folder is the file ``frame_template.format(i + frame_index_start)``.
Files are read with ``tf.io.read_file`` and decoded with ``tf.io.decode_jpeg`` (eagerly, so a bad file
raises :class:`BadSampleError` naming it instead of stopping the input pipeline).
"""
from __future__ import annotations

import os
import re

import numpy as np
import tensorflow as tf

from rnl_keras.data.errors import BadSampleError


def frame_path(folder: str, index: int, template: str, start: int = 1) -> str:
    """Path of 0-based frame ``index`` of ``folder``."""
    return os.path.join(folder, template.format(int(index) + start))


def read_frame_files(folder: str, indices, template: str = "img_{:05d}.jpg", start: int = 1,
                     num_frames: int | None = None) -> np.ndarray:
    """Decode frames ``indices`` (0-based; repeats decoded once) of a frame folder.

    Returns:
      uint8 ``(len(indices), H, W, 3)``.

    Raises:
      BadSampleError: missing folder or frame file, unreadable JPEG, or frames of different sizes.
    """
    if not os.path.isdir(folder):
        raise BadSampleError(folder, "frame folder not found")
    indices = [int(i) for i in np.asarray(indices).reshape(-1)]
    decoded: dict[int, np.ndarray] = {}
    for i in sorted(set(indices)):
        path = frame_path(folder, i, template, start)
        if not os.path.isfile(path):
            have = f" (the list says {num_frames} frames)" if num_frames else ""
            raise BadSampleError(folder, f"frame file {os.path.basename(path)} not found{have}")
        try:
            img = tf.io.decode_jpeg(tf.io.read_file(path), channels=3).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            raise BadSampleError(path, f"unreadable JPEG (truncated or corrupt): "
                                 f"{_op_message(e)}") from None
        decoded[i] = img
    shapes = {a.shape for a in decoded.values()}
    if len(shapes) != 1:
        raise BadSampleError(folder, f"frames of different sizes: {sorted(shapes)}")
    return np.stack([decoded[i] for i in indices])


def _op_message(err) -> str:
    """The first line of a TF op error without its ``{{function_node ...}}`` / ``[Op:...]`` wrapping."""
    line = err.message.splitlines()[0] if err.message else type(err).__name__
    line = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", line)
    return re.sub(r"\s*\[Op:[^\]]*\]$", "", line).strip()
