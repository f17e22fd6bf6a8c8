"""Check an export destination before any work, and remove what a failed export created.

``pipelines/export.py`` and :func:`rnl_keras.export.export_model` call :func:`check_destination`
first, so an ``--export_dir`` that is a file, lies under a file, or is not writable (read-only file
system, no permission) is refused in one line naming the flag, before the model is loaded or
traced. :func:`created_dirs` / :func:`remove_created_dirs` undo the directories a failed export
made.
"""
from __future__ import annotations

import os

from rnl_keras.export.saved_model import ExportError


def _nearest_existing(path: str) -> str:
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return probe


def check_destination(export_dir: str, name: str, flag: str = "--export_dir") -> None:
    """Raise :class:`ExportError` naming ``flag`` unless ``<export_dir>/<name>`` can be written.

    Args:
      export_dir: base directory of the exports (created when missing).
      name: the model name, a directory inside it.
      flag: how the caller's user named ``export_dir`` (the message names it).
    """
    if not export_dir:
        raise ExportError(f"{flag} is empty: give the directory the exports go to")
    base = os.path.join(export_dir, name)
    for path in (export_dir, base):
        if os.path.lexists(path) and not os.path.isdir(path):
            raise ExportError(f"{flag}={export_dir}: {path} exists and is not a directory")
    anchor = _nearest_existing(base)
    if not os.path.isdir(anchor):
        raise ExportError(f"{flag}={export_dir}: {anchor} is a file, not a directory, so "
                          f"{base} cannot be created")
    if not os.access(anchor, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only_fs(anchor) else "no write permission"
        raise ExportError(f"{flag}={export_dir}: cannot write into {anchor} ({why})")


def _read_only_fs(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def created_dirs(path: str) -> list[str]:
    """The directories ``os.makedirs(path)`` would create, deepest first."""
    out = []
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        out.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return out


def remove_created_dirs(dirs: list[str]) -> None:
    """Remove the (still empty) directories listed by :func:`created_dirs`, deepest first."""
    for path in dirs:
        try:
            os.rmdir(path)
        except OSError:
            return
