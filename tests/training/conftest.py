"""Fixture of the training tests: a tiny synthetic video dataset (session scoped)."""
import pytest


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """16 train + 8 val h264 clips of 32x32 (8 classes of motion)."""
    from rnl_keras.data.synthetic import write_synthetic_dataset
    out = tmp_path_factory.mktemp("tiny_data")
    return write_synthetic_dataset(str(out), num_train=16, num_val=8, num_frames=8,
                                   size=(32, 32), seed=0)
