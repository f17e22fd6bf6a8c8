"""rnl_keras.atomic_io: a failed write leaves the old file and no temporary behind."""
import json
import os

import pytest

from rnl_keras.atomic_io import write_atomic, write_json_atomic


def test_json_is_written_and_replaced(tmp_path):
    path = tmp_path / "sub" / "report.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2}, sort_keys=True)
    assert json.loads(path.read_text()) == {"a": 2}
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)


def test_a_failing_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")

    def broken(tmp):
        assert tmp.endswith(".keras")
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, broken)
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["model.keras"]


def test_pid_alive_tells_running_from_finished_processes():
    import subprocess
    import sys

    from rnl_keras.atomic_io import pid_alive
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert pid_alive(os.getpid())
    assert not pid_alive(child.pid)   # reaped: the pid is free (not reused this fast)
