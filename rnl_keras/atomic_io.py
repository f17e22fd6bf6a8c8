"""Write files so that readers only ever see a complete old file or a complete new one.

Everything the package writes that a later step reads back (models, reports, checkpoints'
companions) goes through here: save to a temporary name in the target directory, then
``os.replace`` onto the final name. A killed process leaves at most a ``.tmp_*`` file behind.
"""
import json
import os
import tempfile


def write_atomic(path, save):
    """Call ``save(tmp_path)`` for a temporary file beside ``path``, then rename it to ``path``.

    The temporary name keeps ``path``'s extension (``model.save`` dispatches on it) and the file
    gets the permissions a plain ``open`` would give (``mkstemp`` creates 0600).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    try:
        save(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path, payload, **dump_kwargs):
    """``json.dump(payload)`` (indent 2 unless given) to ``path`` atomically, newline-terminated."""
    dump_kwargs.setdefault("indent", 2)

    def save(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, **dump_kwargs)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())

    write_atomic(path, save)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (so its temporaries must be left alone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # it runs, as another user
        return True
    return True
