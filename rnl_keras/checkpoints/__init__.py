"""Import of the authors' released PyTorch checkpoints (RNL TSM-ResNet50) and TSM's ones.

Importing this package never imports torch, and nothing in it does: ``.pth`` files are read by
:func:`read_torch_file`'s allow-list unpickler, which runs no code from the file unless
``trust_pickled_code=True`` is passed.
"""
from rnl_keras.checkpoints.torch_pickle import UnsafeCheckpointError, read_torch_file
from rnl_keras.checkpoints.torch_tsm import (RELEASED_GATES, RELEASED_KERNELS, RELEASED_PLACEMENT,
                                             CheckpointError, build_released_model,
                                             detect_configuration, from_torch_state_dict,
                                             load_state_dict_into, load_torch_state_dict,
                                             normalize_key, released_layout)

__all__ = ["from_torch_state_dict", "load_torch_state_dict", "load_state_dict_into",
           "build_released_model", "detect_configuration", "released_layout", "normalize_key",
           "read_torch_file", "UnsafeCheckpointError", "CheckpointError", "RELEASED_PLACEMENT",
           "RELEASED_GATES", "RELEASED_KERNELS"]
