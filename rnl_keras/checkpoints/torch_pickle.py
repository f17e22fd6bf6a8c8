"""Read PyTorch checkpoint files (``torch.save``) into NumPy arrays without PyTorch, safely.

A ``.pth`` file is a pickle, and unpickling can call any importable function: a crafted checkpoint
runs arbitrary code under ``torch.load(weights_only=False)`` or ``pickle.load``. This reader uses a
restricted unpickler instead. Every global the pickle names goes through an allow-list:

* ``collections.OrderedDict`` (state dicts);
* ``torch._utils._rebuild_tensor`` / ``_rebuild_tensor_v2`` / ``_rebuild_parameter`` /
  ``_rebuild_parameter_with_state`` and ``torch._tensor._rebuild_from_type_v2`` (with
  ``torch.Tensor`` / ``torch.nn.parameter.Parameter`` as the type): replaced here by functions
  that build NumPy arrays from the storage bytes, checked against the storage bounds;
* the ``torch.*Storage`` dtype markers (``FloatStorage``, ``HalfStorage``, ``BFloat16Storage``,
  ... ``UntypedStorage``), used only as dtype tags of the persistent storage ids;
* NumPy scalars and dtypes (``numpy.core.multiarray.scalar``, ``numpy.dtype``; object dtypes are
  refused), which old training scripts store as metadata (e.g. ``best_prec1``).

Anything else (``os.system``, ``builtins.exec``, ``argparse.Namespace``, a pickled
``nn.Module``...) stops the read with :class:`UnsafeCheckpointError` naming the file and the
global, before anything is built. ``trust_pickled_code=True`` lifts the restriction for other
globals (they are imported and called as plain ``pickle`` would: only for files you trust).

Both formats ``torch.save`` writes are read: the zip archive (PyTorch >= 1.6: ``<name>/data.pkl``
plus one ``<name>/data/<key>`` entry per storage, ``<name>/byteorder``) and the legacy stream
(magic number, protocol, system info, the object pickle, the storage key list, then each storage
as an int64 element count followed by its bytes). Tensors come back as C-contiguous NumPy arrays
(bfloat16 widened to float32).
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}


class UnsafeCheckpointError(ValueError):
    """A checkpoint file needs code the safe reader does not run (or is not a torch file)."""


class _Sealed:
    """Placeholders the pickle may not modify (a BUILD opcode on them is refused)."""

    def __setstate__(self, state):
        raise UnsafeCheckpointError("the pickle tries to set the state of a tensor / storage")


class _StorageType(_Sealed):
    """Marker for ``torch.<Name>Storage``: only its dtype is used."""

    def __init__(self, name):
        self.name = name
        self.itemsize = 2 if name == "BFloat16Storage" else np.dtype(_DTYPES[name]).itemsize


class _Storage(_Sealed):
    """A storage's element count and dtype; ``data`` (a 1-D array) is filled in once read."""

    def __init__(self, storage_type, key, numel):
        self.type, self.key, self.numel = storage_type, str(key), int(numel)
        self.data = None
        self.base, self.offset = None, 0      # legacy views: a slice of another storage


class _Tensor(_Sealed):
    """Placeholder of a tensor, turned into an array once every storage is read."""

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, _Storage):
            raise UnsafeCheckpointError(f"tensor built from a {type(storage).__name__}, "
                                        "not a storage")
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored, **_kw):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor, _rebuild_parameter) or new_type is not _TENSOR_TYPE:
        raise UnsafeCheckpointError("_rebuild_from_type_v2 with a function or type outside "
                                    "the tensor allow-list")
    return func(*args)


def _numpy_dtype(*args):
    dtype = np.dtype(*args[:1])
    if dtype.hasobject:
        raise UnsafeCheckpointError(f"NumPy dtype {dtype} holds Python objects")
    return dtype


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafeCheckpointError("NumPy scalar of an object dtype")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


_TENSOR_TYPE = object()
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TENSOR_TYPE,
    ("torch.nn.parameter", "Parameter"): _TENSOR_TYPE,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}
_ALLOWED.update({("torch", name): _StorageType(name) for name in _DTYPES})
_ALLOWED.update({("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage"),
                 ("torch.storage", "TypedStorage"): _StorageType("UntypedStorage")})


class _Unpickler(pickle.Unpickler):
    """Allow-list unpickler; ``persistent_load`` turns storage ids into :class:`_Storage`."""

    def __init__(self, file, path, trust, storages):
        super().__init__(file)
        self.path, self.trust, self.storages = path, trust, storages
        self.imported = []

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if self.trust:
            self.imported.append(f"{module}.{name}")
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"{self.path!r}: refused to load: its pickle calls {module}.{name}, which is not a "
            "tensor or container type. Unpickling it would run code from the file. If you trust "
            "where the file comes from, pass trust_pickled_code=True (--trust_pickled_code); "
            "otherwise ask for a plain state dict (torch.save(model.state_dict(), ...)).")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or _ascii(pid[0]) != "storage":
            raise UnsafeCheckpointError(f"{self.path!r}: unknown persistent id {pid!r:.80}")
        storage_type, key = pid[1], _ascii(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"{self.path!r}: storage of type {storage_type!r:.80}")
        if len(pid) == 5:                                # zip: (tag, type, key, location, numel)
            return self._storage(storage_type, key, pid[4])
        if len(pid) == 6:                                # legacy: + view_metadata
            root = self._storage(storage_type, key, pid[4])
            if pid[5] is None:
                return root
            view_key, offset, view_size = pid[5]
            view = self._storage(storage_type, _ascii(view_key), view_size)
            view.base, view.offset = root, int(offset)
            return view
        raise UnsafeCheckpointError(f"{self.path!r}: storage id of unknown layout {pid!r:.80}")

    def _storage(self, storage_type, key, numel):
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type, key, numel)
        return self.storages[key]


def _ascii(value):
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _decode(raw, storage_type, path, key, big_endian=False):
    if storage_type.name == "BFloat16Storage":
        bits = np.frombuffer(raw, dtype=">u2" if big_endian else "<u2").astype(np.uint32)
        return (bits << 16).view(np.float32)
    dtype = np.dtype(_DTYPES[storage_type.name])
    dtype = dtype.newbyteorder(">" if big_endian else "<") if dtype.itemsize > 1 else dtype
    if len(raw) % dtype.itemsize:
        raise UnsafeCheckpointError(f"{path!r}: storage {key} has {len(raw)} bytes, not a "
                                    f"multiple of {dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))


def _materialize(obj, path):
    """Replace every :class:`_Tensor` in nested dicts / lists / tuples by a NumPy array."""
    if isinstance(obj, _Tensor):
        return _tensor_array(obj, path)
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        for key, value in obj.items():
            out[key] = _materialize(value, path)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, path) for v in obj)
    if isinstance(obj, _Storage):
        raise UnsafeCheckpointError(f"{path!r}: holds a bare storage; expected tensors")
    return obj


def _tensor_array(tensor, path):
    storage = tensor.storage
    data = storage.data
    if storage.base is not None:
        base = storage.base.data
        data = None if base is None else base[storage.offset:storage.offset + storage.numel]
    if data is None or len(data) < storage.numel:
        raise UnsafeCheckpointError(f"{path!r}: storage {storage.key} is missing or truncated")
    size, stride = tensor.size, tensor.stride
    if len(size) != len(stride) or min(size + stride + (tensor.offset,), default=0) < 0:
        raise UnsafeCheckpointError(f"{path!r}: tensor of size {size} stride {stride}")
    if 0 in size:
        return np.zeros(size, data.dtype)
    last = tensor.offset + sum((s - 1) * st for s, st in zip(size, stride))
    if last >= len(data):
        raise UnsafeCheckpointError(f"{path!r}: tensor of size {size}, stride {stride} at offset "
                                    f"{tensor.offset} reads past storage {storage.key} "
                                    f"({len(data)} elements)")
    view = np.lib.stride_tricks.as_strided(data[tensor.offset:], shape=size,
                                           strides=[s * data.itemsize for s in stride],
                                           writeable=False)
    return np.array(view, order="C", copy=True)


def _read_zip(path, trust):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise UnsafeCheckpointError(f"{path!r}: a zip file but not a torch.save archive "
                                        "(no single <name>/data.pkl entry)")
        prefix = pkl[0][:-len("data.pkl")]
        big = (prefix + "byteorder" in names
               and archive.read(prefix + "byteorder").strip() == b"big")
        storages = {}
        unpickler = _Unpickler(io.BytesIO(archive.read(pkl[0])), path, trust, storages)
        result = unpickler.load()
        for key, storage in storages.items():
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise UnsafeCheckpointError(f"{path!r}: storage entry {entry} is missing")
            raw = archive.read(entry)
            if len(raw) < storage.numel * storage.type.itemsize:
                raise UnsafeCheckpointError(f"{path!r}: storage entry {entry} has {len(raw)} "
                                            f"bytes, expected {storage.numel} elements")
            storage.data = _decode(raw, storage.type, path, key, big)
    return result, unpickler.imported


def _read_legacy(path, trust):
    with open(path, "rb") as f:
        header = []
        for what in ("magic number", "protocol version", "system info"):
            header.append(_Unpickler(f, path, False, {}).load())
        if header[0] != LEGACY_MAGIC:
            raise UnsafeCheckpointError(f"{path!r}: not a torch.save file (bad magic number)")
        info = header[2] if isinstance(header[2], dict) else {}
        big = not info.get("little_endian", True)
        storages = {}
        unpickler = _Unpickler(f, path, trust, storages)
        result = unpickler.load()
        keys = _Unpickler(f, path, False, {}).load()
        for key in keys:
            storage = storages.get(_ascii(key))
            if storage is None or storage.base is not None:
                raise UnsafeCheckpointError(f"{path!r}: storage key {key!r} not in the pickle")
            count = struct.unpack(">q" if big else "<q", f.read(8))[0]
            raw = f.read(count * storage.type.itemsize)
            if count != storage.numel or len(raw) != count * storage.type.itemsize:
                raise UnsafeCheckpointError(f"{path!r}: storage {key} is truncated or of the "
                                            f"wrong size ({count} vs {storage.numel} elements)")
            storage.data = _decode(raw, storage.type, path, key, big)
    return result, unpickler.imported


def read_torch_file(path, trust_pickled_code=False, warn=print):
    """Unpickle a ``torch.save`` file with tensors as NumPy arrays, running no code from it.

    Args:
        path: a ``.pth`` / ``.pt`` / ``.pth.tar`` file (zip archive or legacy stream).
        trust_pickled_code: also import and call globals outside the allow-list (DANGEROUS:
            the file can run any code; only for files from a source you trust).
        warn: called with one line naming the globals imported under ``trust_pickled_code``.
    Returns:
        The saved object (typically a dict / OrderedDict) with every tensor a NumPy array.
    Raises:
        UnsafeCheckpointError: the pickle names a global outside the allow-list (without
            ``trust_pickled_code``), or the file is not a readable torch.save file.
    """
    path = str(path)
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        if head.startswith(b"PK"):
            result, imported = _read_zip(path, bool(trust_pickled_code))
        elif head[:1] == b"\x80":
            result, imported = _read_legacy(path, bool(trust_pickled_code))
        else:
            raise UnsafeCheckpointError(f"{path!r}: not a torch.save file (neither a zip archive "
                                        "nor a pickle stream)")
        result = _materialize(result, path)
    except UnsafeCheckpointError as err:
        if path in str(err):
            raise
        raise UnsafeCheckpointError(f"{path!r}: refused: {err}") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError,
            TypeError, KeyError, IndexError, AttributeError) as err:
        raise UnsafeCheckpointError(f"{path!r}: cannot be read as a torch.save file "
                                    f"({type(err).__name__}: {err})") from None
    if imported:
        warn(f"warning: {path!r}: trust_pickled_code=True imported and ran "
             f"{sorted(set(imported))} from the file")
    return result
