"""Session fixtures of the export tests: the tiny "se+rnl" model exported once (see helpers.py)."""
import numpy as np
import pytest

from tests.export.helpers import LABELS, S, T, VIDEOS, sharpen, tiny_tsm


@pytest.fixture(scope="session")
def video_clips():
    """uint8 (T, H, W, 3) TSN-centre clips of the real test videos (different sizes)."""
    from rnl_keras.export.predictor import read_clip
    return [read_clip(v, T) for v in VIDEOS]


@pytest.fixture(scope="session")
def labels_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("labels") / "classes.txt"
    path.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, video_clips, labels_file):
    """The "se+rnl" + channel-gate model exported with both TFLite files (parity on real clips)."""
    from rnl_keras.export import export_model, preprocess_frames_np
    model = tiny_tsm("se+rnl")
    clips = np.stack([preprocess_frames_np(c, S) for c in video_clips])
    sharpen(model, clips)
    # Parity clips for the export-time check: centre crops of the real clips to one size.
    h = min(c.shape[1] for c in video_clips)
    w = min(c.shape[2] for c in video_clips)
    parity = np.stack([c[:, (c.shape[1] - h) // 2:(c.shape[1] - h) // 2 + h,
                         (c.shape[2] - w) // 2:(c.shape[2] - w) // 2 + w] for c in video_clips])
    export_dir = str(tmp_path_factory.mktemp("saved_models"))
    report = export_model(model, export_dir, "rnl_tiny", labels_file, parity_clips=parity,
                          log=lambda *_: None)
    return {"model": model, "report": report, "export_dir": export_dir,
            "version_dir": report["files"]["saved_model"], "labels": LABELS}


@pytest.fixture(scope="session")
def loaded(exported):
    import tensorflow as tf
    return tf.saved_model.load(exported["version_dir"])
