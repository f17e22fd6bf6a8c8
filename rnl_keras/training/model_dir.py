"""The output directory of a training run: checked before any work, leftovers cleaned.

``check_model_dir`` refuses a ``--model_dir`` that is a file (or holds a file where a
sub-directory must go) or that cannot be written, naming the flag. ``clean_stale`` removes what a
killed run left: ``.tmp_*`` files of interrupted atomic writes (``rnl_keras.atomic_io``) in the
model directory, and the private checkpoint directories ``<tmp>/rnl_keras_<pid>_<task>_<id>`` of
non-chief workers whose process no longer runs.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile

from rnl_keras.atomic_io import pid_alive
from rnl_keras.training.config import ConfigError

# Sub-directories train.py creates in model_dir (each must be a directory when it exists).
SUBDIRS = ("ckpt", "tb")
_WORKER_DIR = re.compile(r"^rnl_keras_(\d+)_(\w+)_(\d+)$")


def check_model_dir(path: str, writable: bool = True) -> None:
    """Refuse a model directory that cannot work, before any work (nothing is created).

    Args:
      path: the ``--model_dir`` value.
      writable: also check that it can be created / written (the chief writes it; other
        workers only read its checkpoints).
    Raises:
      ConfigError: naming ``--model_dir``, the path and what is wrong.
    """
    if not path:
        raise ConfigError("model_dir", "is required")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError("model_dir", f"{path} exists and is not a directory")
    for sub in SUBDIRS:
        full = os.path.join(path, sub)
        if os.path.exists(full) and not os.path.isdir(full):
            raise ConfigError("model_dir", f"{full} exists and is not a directory (the run "
                              f"writes its {sub}/ there)")
    # The directory itself, or the nearest existing parent it will be created in.
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError("model_dir", f"cannot create {path}: {existing} is a file")
    if not writable:
        return
    try:   # a real probe (os.access is wrong for root, read-only mounts, ACLs)
        os.rmdir(tempfile.mkdtemp(prefix=".tmp_write_check_", dir=existing))
    except OSError as err:
        raise ConfigError("model_dir", f"cannot write to {existing}: "
                          f"{err.strerror or err}") from None


def clean_stale(model_dir: str | None) -> list[str]:
    """Remove leftovers of killed runs; returns the removed paths.

    Args:
      model_dir: the run's model directory (its ``.tmp_*`` files go; call this on the chief
        only, before it writes anything), or None to clean only the worker directories.
    """
    removed = []
    if model_dir and os.path.isdir(model_dir):
        for path in glob.glob(os.path.join(glob.escape(model_dir), ".tmp_*")):
            if os.path.isfile(path) or os.path.islink(path):
                try:
                    os.remove(path)
                    removed.append(path)
                except OSError:
                    pass
    removed += clean_stale_worker_dirs()
    return removed


def clean_stale_worker_dirs(base: str | None = None) -> list[str]:
    """Remove ``rnl_keras_<pid>_<task>_<id>`` directories of processes that no longer run (and
    belong to this user) from the temp directory; returns the removed paths."""
    base = base or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        match = _WORKER_DIR.match(name)
        path = os.path.join(base, name)
        if not match or int(match[1]) == os.getpid() or pid_alive(int(match[1])):
            continue
        try:
            if os.lstat(path).st_uid != os.getuid() or not os.path.isdir(path):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            removed.append(path)
    return removed


def worker_dir(task_type: str, task_id: int, pid: int | None = None) -> str:
    """The private write directory of a non-chief worker process."""
    return os.path.join(tempfile.gettempdir(),
                        f"rnl_keras_{pid or os.getpid()}_{task_type}_{task_id}")


def remove_own_worker_dirs() -> None:
    """Remove this process's ``rnl_keras_<pid>_*`` directories (non-chief checkpoints)."""
    base = tempfile.gettempdir()
    prefix = f"rnl_keras_{os.getpid()}_"
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix) and _WORKER_DIR.match(name):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
