"""TemporalShift against a NumPy loop of TSM's shift (docs/fidelity.md 3.2: direction matters)."""
import numpy as np
import pytest

from rnl_keras.layers import TemporalShift
from tests.layers import numpy_reference as ref


@pytest.mark.parametrize("fold_div", [8, 4])
def test_clip_layout_matches_numpy(fold_div, rng):
    x = rng.normal(size=(2, 5, 3, 4, 16)).astype("float32")
    np.testing.assert_array_equal(np.asarray(TemporalShift(5, fold_div)(x)),
                                  ref.temporal_shift(x, fold_div).astype("float32"))


def test_frame_batch_layout_matches_clip_layout(rng):
    x = rng.normal(size=(2, 4, 3, 3, 24)).astype("float32")
    frames = x.reshape(8, 3, 3, 24)
    out = np.asarray(TemporalShift(4)(frames)).reshape(x.shape)
    np.testing.assert_array_equal(out, ref.temporal_shift(x).astype("float32"))


def test_direction_first_fold_comes_from_next_frame():
    x = np.arange(4, dtype="float32")[None, :, None, None, None] * np.ones((1, 4, 1, 1, 8), "float32")
    out = np.asarray(TemporalShift(4)(x))[0, :, 0, 0]
    np.testing.assert_array_equal(out[:, 0], [1, 2, 3, 0])   # from t + 1, zero at the end
    np.testing.assert_array_equal(out[:, 1], [0, 0, 1, 2])   # from t - 1, zero at the start
    np.testing.assert_array_equal(out[:, 2:], x[0, :, 0, 0, 2:])
