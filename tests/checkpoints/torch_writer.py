"""Write files in ``torch.save``'s two formats without PyTorch (test helper).

The pickles name the same globals torch writes (``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``...; checked against real torch files
by tests/checkpoints/torchvision_parity_check.py's torch side): stand-ins of those globals are
put in ``sys.modules`` only while pickling, so ``pickle`` records them by name.

* zip: ``<name>/data.pkl`` + ``<name>/data/<key>`` (raw little-endian bytes) + ``byteorder``,
  ``version``; persistent ids ``("storage", <Storage type>, key, "cpu", numel)``.
* legacy: magic number, protocol 1001, system info, the pickle (ids with a 6th ``None`` view
  field), the list of storage keys, then each storage as int64 element count + bytes.
"""
import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
                 np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
                 np.dtype("int32"): "IntStorage", np.dtype("uint8"): "ByteStorage",
                 np.dtype("bool"): "BoolStorage"}


class Storage:
    """A 1-D array saved as one torch storage (share it between tensors for views)."""

    def __init__(self, data, key):
        self.data, self.key = np.ascontiguousarray(data).reshape(-1), str(key)


class Tensor:
    """A strided view of a :class:`Storage` (offset / size / stride in elements)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


@contextlib.contextmanager
def _fake_torch():
    """Stand-ins for the globals torch pickles, registered only for the ``with`` block."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", \
        "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    classes = {}
    for name in STORAGE_NAMES.values():
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
        classes[name] = cls
    torch._utils = utils
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield _rebuild_tensor_v2, classes
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module


def _as_tensors(obj, counter):
    """Replace arrays by :class:`Tensor` (one storage each) in nested dicts / lists."""
    if isinstance(obj, np.ndarray):
        storage = Storage(obj, next(counter))
        strides = tuple(int(s) for s in np.array(obj, order="C").strides)
        return Tensor(storage, 0, obj.shape, tuple(s // max(obj.itemsize, 1) for s in strides))
    if isinstance(obj, dict):
        return type(obj)((k, _as_tensors(v, counter)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_as_tensors(v, counter) for v in obj)
    return obj


def _pickle(obj, legacy):
    """(pickle bytes, {key: Storage}) of ``obj`` with torch's reduce / persistent ids."""
    storages = {}
    buffer = io.BytesIO()
    with _fake_torch() as (rebuild, classes):
        class Pickler(pickle.Pickler):
            def persistent_id(self, value):
                if isinstance(value, Storage):
                    storages[value.key] = value
                    pid = ("storage", classes[STORAGE_NAMES[value.data.dtype]], value.key, "cpu",
                           int(value.data.size))
                    return pid + (None,) if legacy else pid
                return None

            def reducer_override(self, value):
                if isinstance(value, Tensor):
                    return rebuild, (value.storage, value.offset, tuple(value.size),
                                     tuple(value.stride), False, collections.OrderedDict())
                return NotImplemented

        Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue(), storages


def save(obj, path, legacy=False):
    """``torch.save(obj, path)`` for nested dicts / lists of NumPy arrays and :class:`Tensor`."""
    import itertools

    data, storages = _pickle(_as_tensors(obj, itertools.count()), legacy)
    if legacy:
        with open(path, "wb") as f:
            for header in (MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                          "type_sizes": {"short": 2, "int": 4, "long": 4}}):
                pickle.dump(header, f, protocol=2)
            f.write(data)
            pickle.dump(list(storages), f, protocol=2)
            for storage in storages.values():
                f.write(struct.pack("<q", storage.data.size))
                f.write(storage.data.astype(storage.data.dtype.newbyteorder("<")).tobytes())
        return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/byteorder", "little")
        for storage in storages.values():
            archive.writestr(f"archive/data/{storage.key}", storage.data.tobytes())
        archive.writestr("archive/version", "3\n")
