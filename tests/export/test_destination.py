"""A bad --export_dir (a file, under a file, read-only) is refused up front naming the flag, and a
failed export leaves no temporary behind (before: a traceback and a leaked rnl-export-assets-*)."""
import os
import subprocess
import sys
import tempfile

import pytest

from tests.export.helpers import REPO, tiny_tsm

EXPORT = os.path.join(REPO, "pipelines", "export.py")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """tempfile's directory for this test only, so leaked temporaries can be seen."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _ours(tmp):
    """This package's temporaries in ``tmp`` (TensorFlow's autograph writes its own there)."""
    return [p for p in os.listdir(tmp) if p.startswith("rnl")]


@pytest.mark.parametrize("where", ["is a file", "under a file", "name is a file"])
def test_export_model_refuses_a_file_destination(where, tmp_path, private_tmp, labels_file):
    from rnl_keras.export import ExportError, export_model
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    export_dir = {"is a file": blocker, "under a file": blocker / "sub",
                  "name is a file": tmp_path}[where]
    name = "blocker" if where == "name is a file" else "m"
    with pytest.raises(ExportError, match="--export_dir"):
        export_model(tiny_tsm("none"), str(export_dir), name, labels_file, tflite=False,
                     log=lambda *_: None)
    assert _ours(private_tmp) == [], "temporaries left behind"
    assert blocker.read_text() == "not a directory"


def test_failed_export_removes_the_directories_it_created(tmp_path, private_tmp, labels_file):
    from rnl_keras.export import ExportError, export_model
    export_dir = tmp_path / "new" / "exports"
    with pytest.raises(ExportError, match="parity check failed"):   # after the SavedModel is saved
        export_model(tiny_tsm("none"), str(export_dir), "m", labels_file, tflite=False,
                     tolerance=-1.0, log=lambda *_: None)
    assert not (tmp_path / "new").exists()
    assert _ours(private_tmp) == []


def _run_export(args, tmp, prefix=()):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp))
    return subprocess.run([*prefix, sys.executable, EXPORT, *args], capture_output=True, text=True,
                          env=env, timeout=300)


def _read_only(directory):
    """How to run a command with ``directory`` read-only: chmod for a normal user; for root
    (which ignores permissions) a read-only bind mount in a private mount namespace."""
    if os.geteuid() != 0:
        os.chmod(directory, 0o555)
        return ()
    script = (f'mount --bind "{directory}" "{directory}" && '
              f'mount -o remount,bind,ro "{directory}" && exec "$@"')
    return ("unshare", "-m", "sh", "-c", script, "sh")


def test_cli_refuses_file_and_read_only_destinations_naming_the_flag(tmp_path, labels_file):
    keras_file = tmp_path / "model.keras"
    tiny_tsm("none").save(keras_file)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    cases = [(str(blocker), (), "is not a directory"),
             (str(blocker / "sub"), (), "is a file"),
             (str(readonly / "exports"), _read_only(readonly), "cannot write into")]
    try:
        for export_dir, prefix, why in cases:
            proc = _run_export([f"--model={keras_file}", "--name=m", f"--export_dir={export_dir}",
                                f"--labels={labels_file}", "--notflite"], tmp, prefix)
            assert proc.returncode != 0, (export_dir, proc.stdout[-2000:])
            assert f"--export_dir={export_dir}" in proc.stderr and why in proc.stderr, \
                proc.stderr[-3000:]
            assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
            assert os.listdir(tmp) == [], f"temporaries left behind: {os.listdir(tmp)}"
        assert os.listdir(readonly) == [] and blocker.read_text() == "x"
    finally:
        os.chmod(readonly, 0o755)
