"""Shared fixtures of the input-pipeline tests: the shipped real clips and a tiny synthetic set."""
import os
import pathlib

import pytest

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
CARPHONE = DATA / "carphone_pristine.mp4"
SOCCER = DATA / "v_SoccerJuggling_g23_c01.avi"
HMDB = DATA / "hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi"
SEGWAY = DATA / "WUzgd7C1pWA.mp4"
REAL_CLIPS = [CARPHONE, SOCCER, HMDB, SEGWAY]


@pytest.fixture(autouse=True)
def _reset_sample_logs():
    """Every test starts and ends with empty process-wide logs (bad samples, delivered clips)."""
    from rnl_keras.data import BadSampleLog
    from rnl_keras.data.delivery import DeliveryLog
    for log in (BadSampleLog, DeliveryLog):
        log.reset()
    yield
    for log in (BadSampleLog, DeliveryLog):
        log.reset()


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """16 train + 8 val synthetic clips, 12 frames of 32x32."""
    from rnl_keras.data.synthetic import write_synthetic_dataset
    out = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_dataset(str(out), num_train=16, num_val=8, num_frames=12, size=(32, 32),
                                   seed=3)


@pytest.fixture
def real_list(tmp_path):
    """A video list of the four shipped clips (labels 0..3), root = tests/data."""
    path = tmp_path / "real.txt"
    path.write_text("".join(f"{c.name} {i}\n" for i, c in enumerate(REAL_CLIPS)))
    return str(path)


def write_list(path, lines):
    path = pathlib.Path(path)
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def synthetic_lines(info, split="train", k=None):
    with open(info[f"{split}_list"]) as f:
        lines = [os.path.join(info["root"], ln.split()[0]) + " " + ln.split()[1] for ln in f]
    return lines[:k] if k else lines
