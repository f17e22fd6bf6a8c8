"""Issue 15 item 1: ``.pth`` files are read without torch and without running code from them.

Valid files in both ``torch.save`` formats (written by tests/checkpoints/torch_writer.py, the
format real torch reads back: checked by torchvision_parity_check.py) load to the same arrays;
a crafted checkpoint whose pickle would run code is refused, naming the file and the global, and
the code does not run; ``trust_pickled_code=True`` is the only way past the allow-list.
"""
import builtins
import collections
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from rnl_keras.checkpoints import (CheckpointError, UnsafeCheckpointError, load_torch_state_dict,
                                   read_torch_file)
from tests.checkpoints import torch_writer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _state_dict(rng):
    return collections.OrderedDict([
        ("conv1.weight", rng.normal(0, 1, (4, 3, 3, 3)).astype("float32")),
        ("bn1.running_var", rng.uniform(0.5, 2, 4).astype("float64")),
        ("bn1.num_batches_tracked", np.array(7, dtype="int64")),
        ("half", rng.normal(0, 1, (2, 5)).astype("float16")),
        ("mask", rng.uniform(size=(3, 3)) > 0.5),
    ])


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_valid_checkpoint_loads_to_the_same_arrays(tmp_path, legacy):
    rng = np.random.default_rng(0)
    sd = _state_dict(rng)
    path = tmp_path / "ckpt.pth.tar"
    torch_writer.save({"epoch": 12, "arch": "resnet50", "best_prec1": 71.5, "state_dict": sd},
                      path, legacy=legacy)
    full = read_torch_file(path)
    assert full["epoch"] == 12 and full["arch"] == "resnet50" and full["best_prec1"] == 71.5
    loaded = load_torch_state_dict(path)
    assert list(loaded) == list(sd)
    for key, value in sd.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value)


def test_strided_views_of_one_storage(tmp_path):
    """A transposed view and an offset slice of one shared storage (torch keeps views)."""
    base = np.arange(24, dtype="float32")
    storage = torch_writer.Storage(base, "0")
    sd = {"t": torch_writer.Tensor(storage, 0, (4, 6), (1, 4)),       # (6, 4) transposed
          "s": torch_writer.Tensor(storage, 5, (3,), (2,))}
    path = tmp_path / "views.pth"
    torch_writer.save(sd, path)
    loaded = load_torch_state_dict(path)
    np.testing.assert_array_equal(loaded["t"], base.reshape(6, 4).T)
    np.testing.assert_array_equal(loaded["s"], base[5:11:2])


def test_a_view_past_its_storage_is_refused(tmp_path):
    storage = torch_writer.Storage(np.arange(6, dtype="float32"), "0")
    path = tmp_path / "overrun.pth"
    torch_writer.save({"t": torch_writer.Tensor(storage, 2, (3, 3), (3, 1))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"overrun\.pth.*reads past storage"):
        load_torch_state_dict(path)


class _System:
    """Unpickles to ``os.system(command)``."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Exec:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return builtins.exec, (self.code,)


def _crafted(path, payload, legacy):
    """A torch-format checkpoint whose pickle calls ``payload`` besides a valid state dict."""
    obj = {"state_dict": {"w": np.ones(3, "float32")}, "extra": payload}
    if legacy:
        torch_writer.save(obj, path, legacy=True)
        return
    torch_writer.save(obj, path)
    # swap in a pickle that also reaches the payload, keeping the archive otherwise valid
    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    data, _ = torch_writer._pickle(torch_writer._as_tensors(obj, iter(range(10 ** 6))), False)
    entries["archive/data.pkl"] = data
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in entries.items():
            archive.writestr(name, blob)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.exec"])
def test_code_in_the_pickle_is_refused_and_never_runs(tmp_path, kind, legacy):
    marker = tmp_path / "pwned"
    payload = (_System(f"touch {marker}") if kind == "os.system"
               else _Exec(f"open({str(marker)!r}, 'w').write('x')"))
    path = tmp_path / "evil.pth"
    _crafted(path, payload, legacy)
    global_name = "exec" if kind == "builtins.exec" else "system"
    with pytest.raises(UnsafeCheckpointError) as info:
        load_torch_state_dict(path)
    message = str(info.value)
    assert str(path) in message and global_name in message
    assert "trust_pickled_code" in message
    assert not marker.exists()


def test_plain_pickle_and_garbage_are_refused(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_System("true"), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="model.pkl"):
        read_torch_file(path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not really a checkpoint")
    with pytest.raises(UnsafeCheckpointError, match=r"junk\.pth.*not a torch\.save file"):
        load_torch_state_dict(junk)


def test_trust_pickled_code_is_an_explicit_opt_in(tmp_path):
    """An old checkpoint holding an argparse.Namespace: refused, loads only with the flag."""
    import argparse

    sd = {"w": np.arange(3, dtype="float32")}
    path = tmp_path / "old.pth.tar"
    torch_writer.save({"state_dict": sd, "args": argparse.Namespace(lr=0.01)}, path)
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        load_torch_state_dict(path)
    warnings = []
    loaded = load_torch_state_dict(path, trust_pickled_code=True, warn=warnings.append)
    np.testing.assert_array_equal(loaded["w"], sd["w"])
    assert len(warnings) == 1 and "argparse.Namespace" in warnings[0]


def test_non_tensor_state_dict_is_refused(tmp_path):
    path = tmp_path / "weird.pth"
    torch_writer.save({"state_dict": {"w": np.ones(2, "float32"), "note": "hello"}}, path)
    with pytest.raises(CheckpointError, match="note"):
        load_torch_state_dict(path)


def test_convert_cli_refuses_code_and_names_the_flag(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "TSM_evil_segment8.pth"
    _crafted(path, _System(f"touch {marker}"), legacy=False)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "pipelines", "convert_checkpoint.py"),
         f"--torch_checkpoint={path}", f"--keras_out={tmp_path / 'x.keras'}"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode != 0
    assert str(path) in result.stderr and "--trust_pickled_code" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists() and not (tmp_path / "x.keras").exists()


def test_pickle_may_not_rewrite_a_tensor(tmp_path):
    """A BUILD opcode on a tensor placeholder (to change its storage or strides after the bounds
    are known) is refused."""
    import pickletools

    path = tmp_path / "build.pth"
    torch_writer.save({"w": np.ones(3, "float32")}, path)
    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    data = entries["archive/data.pkl"]
    # append {"size": (1000,)} + BUILD right after the tensor's REDUCE (the last R opcode)
    ops = list(pickletools.genops(data))
    reduce_at = [pos for op, _, pos in ops if op.name == "REDUCE"][-1] + 1
    patch = b"}" + pickle.dumps("size", protocol=2)[2:-1] + b"K\x05\x85" + b"s" + b"b"
    entries["archive/data.pkl"] = data[:reduce_at] + patch + data[reduce_at:]
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in entries.items():
            archive.writestr(name, blob)
    with pytest.raises(UnsafeCheckpointError, match=r"build\.pth"):
        load_torch_state_dict(path)
