"""Versioned layout: new exports take the next number, never touch older versions; failures leave
no version behind; labels asset and top_k_labels."""
import hashlib
import os
import stat
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.export.helpers import LABELS, REPO, S, T, tiny_tsm


def _tree_digest(path):
    digest = {}
    for root, _, files in os.walk(path):
        for f in files:
            full = os.path.join(root, f)
            with open(full, "rb") as fh:
                digest[os.path.relpath(full, path)] = (hashlib.sha256(fh.read()).hexdigest(),
                                                       os.stat(full).st_mtime_ns)
    return digest


class _Cumprod(keras.layers.Layer):
    """tf.math.cumprod is not a TFLite builtin op."""

    def call(self, x):
        return tf.math.cumprod(x, axis=-1)


def test_second_export_is_version_2_and_leaves_version_1_intact(tmp_path, labels_file):
    from rnl_keras.export import export_model
    from rnl_keras.export.labels import read_labels
    export_dir = tmp_path / "saved_models"
    model = tiny_tsm("rnl", seed=2)
    r1 = export_model(model, str(export_dir), "m", labels_file, tflite=False, log=lambda *_: None)
    assert r1["version"] == 1 and r1["tflite"] is None
    v1 = export_dir / "m" / "1"
    assert (v1 / "saved_model.pb").is_file() and (v1 / "variables").is_dir()
    assert read_labels(str(v1 / "assets" / "labels.txt")) == LABELS
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(v1).st_mode) == 0o777 & ~umask, "not readable by a model server"
    before = _tree_digest(str(v1))

    # Version 2 through the command line (loads the .keras file like a user would).
    keras_file = tmp_path / "model.keras"
    model.save(keras_file)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "pipelines", "export.py"),
                           f"--model={keras_file}", "--name=m", f"--export_dir={export_dir}",
                           f"--labels={labels_file}", "--notflite", "--top_k=3"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"version": 2' in proc.stdout
    assert sorted(os.listdir(export_dir / "m")) == ["1", "2", "export_report.json"]
    assert _tree_digest(str(v1)) == before, "version 1 changed"

    loaded = tf.saved_model.load(str(export_dir / "m" / "2"))
    frames = np.random.default_rng(0).integers(0, 256, (2, T, 50, 66, 3), dtype=np.uint8)
    out = loaded.signatures["serving_default"](frames=tf.constant(frames))
    idx = out["top_k_indices"].numpy()
    assert idx.shape == (2, 3)
    names = [[b.decode("utf-8") for b in row] for row in out["top_k_labels"].numpy()]
    assert names == [[LABELS[i] for i in row] for row in idx]
    np.testing.assert_array_equal(idx[:, 0], out["probabilities"].numpy().argmax(axis=1))
    assert any("déjà vu (utf-8)" == n for n in LABELS)  # the non-ASCII name survives the table
    with open(export_dir / "m" / "2" / "assets" / "labels.txt", encoding="utf-8") as f:
        assert f.read().splitlines() == LABELS


def test_failed_tflite_conversion_claims_no_version(tmp_path, labels_file):
    from rnl_keras.export import TFLiteExportError, export_model
    export_dir = tmp_path / "saved_models"
    (export_dir / "bad" / "1").mkdir(parents=True)
    (export_dir / "bad" / "1" / "keep.txt").write_text("v1")
    inputs = keras.Input((T, S, S, 3))
    x = keras.layers.GlobalAveragePooling3D()(inputs)
    x = _Cumprod()(x)
    model = keras.Model(inputs, keras.layers.Dense(len(LABELS))(x))
    with pytest.raises(TFLiteExportError, match="(?i)cumprod|builtin"):
        export_model(model, str(export_dir), "bad", labels_file, log=lambda *_: None)
    assert sorted(os.listdir(export_dir / "bad")) == ["1"], "staging left behind or version taken"
    assert (export_dir / "bad" / "1" / "keep.txt").read_text() == "v1"


def test_labels_are_required_unless_400_classes(tmp_path):
    from rnl_keras.export import LabelsError, export_model, resolve_labels
    model = tiny_tsm("none", seed=3)
    with pytest.raises(LabelsError, match="--labels"):
        export_model(model, str(tmp_path), "x", None, log=lambda *_: None)
    names, path = resolve_labels(None, 400)
    assert len(names) == 400 and names[0] == "abseiling" and path.endswith("kinetics400_classes.txt")
    bad = tmp_path / "three.txt"
    bad.write_text("a\nb\nc\n")
    with pytest.raises(LabelsError, match="3 names"):
        resolve_labels(str(bad), 7)
    assert not os.path.exists(tmp_path / "x" / "1")


def test_version_numbers_and_no_overwrite(tmp_path):
    from rnl_keras.export.saved_model import ExportError, claim_version, next_version, publish_file
    base = tmp_path / "m"
    assert next_version(str(base)) == 1
    (base / "1").mkdir(parents=True)
    (base / "3").mkdir()
    (base / "not_a_version").mkdir()
    assert next_version(str(base)) == 4
    (base / "m-v7.dynamic.tflite").write_bytes(b"x")   # a version whose directory was deleted
    assert next_version(str(base)) == 8
    staged = base / ".tmp-export-x"
    staged.mkdir()
    (staged / "saved_model.pb").write_bytes(b"pb")
    version, target = claim_version(str(base), str(staged))
    assert version == 8 and os.path.isfile(os.path.join(target, "saved_model.pb"))
    assert not staged.exists()
    src = base / "new.tflite"
    src.write_bytes(b"new")
    (base / "m-v8.tflite").write_bytes(b"old")
    with pytest.raises(ExportError, match="refusing to overwrite"):
        publish_file(str(src), str(base / "m-v8.tflite"))
    assert (base / "m-v8.tflite").read_bytes() == b"old"
