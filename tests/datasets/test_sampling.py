"""TSN / dense sampling follows TSM: one frame per segment, centres at test, short videos repeat."""
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.data import DataConfig
from rnl_keras.data import sampling


def _seed(i):
    return tf.constant([i, 7], tf.int64)


@pytest.mark.parametrize("n,t", [(100, 8), (64, 8), (17, 4), (8, 8)])
def test_tsn_train_one_per_segment(n, t):
    avg = n // t
    draws = []
    for s in range(40):
        idx = sampling.tsn_train_indices(n, t, _seed(s)).numpy()
        assert idx.shape == (t,)
        for k, i in enumerate(idx):
            assert k * avg <= i < (k + 1) * avg, (k, i)
        draws.append(idx)
    if avg > 1:   # random inside the segment, not a fixed position
        assert len({tuple(d) for d in draws}) > 1


def test_tsn_train_same_seed_same_indices():
    a = sampling.tsn_train_indices(300, 8, _seed(5)).numpy()
    b = sampling.tsn_train_indices(300, 8, _seed(5)).numpy()
    np.testing.assert_array_equal(a, b)


def test_tsn_test_centres_and_twice():
    idx = sampling.tsn_eval_indices(80, 8).numpy()
    np.testing.assert_array_equal(idx, [[5, 15, 25, 35, 45, 55, 65, 75]])
    # TSM: int(tick / 2 + tick * i) with tick = 100 / 8 = 12.5
    np.testing.assert_array_equal(sampling.tsn_eval_indices(100, 8).numpy()[0],
                                  [int(6.25 + 12.5 * i) for i in range(8)])
    twice = sampling.tsn_eval_indices(80, 8, twice_sample=True).numpy()
    np.testing.assert_array_equal(twice[1], [0, 10, 20, 30, 40, 50, 60, 70])


@pytest.mark.parametrize("n", [1, 3, 5])
def test_short_videos_repeat_in_order(n):
    for idx in (sampling.tsn_train_indices(n, 8, _seed(1)).numpy(),
                sampling.tsn_eval_indices(n, 8).numpy()[0]):
        assert idx.shape == (8,)
        assert np.all(np.diff(idx) >= 0) and idx.min() >= 0 and idx.max() < n
        assert set(idx.tolist()) == set(range(n))        # every frame used, each repeated
    dense = sampling.dense_train_indices(n, 8, 8, _seed(1)).numpy()
    np.testing.assert_array_equal(dense, (np.arange(8) * 8) % n)   # TSM wraps around


def test_dense_sampling():
    for s in range(20):
        idx = sampling.dense_train_indices(300, 8, 8, _seed(s)).numpy()
        np.testing.assert_array_equal(np.diff(idx), [8] * 7)
        assert 0 <= idx[0] <= 300 - 64
    test = sampling.dense_eval_indices(300, 8, 8, clips=10).numpy()
    assert test.shape == (10, 8)
    np.testing.assert_array_equal(test[:, 0], np.linspace(0, 300 - 64, 10).astype(int))
    np.testing.assert_array_equal(test[0], np.arange(8) * 8)


def test_config_dispatch():
    cfg = DataConfig(source="video", list_file="x", num_frames=4, sampling="dense", dense_stride=2,
                     test_clips=3)
    assert sampling.eval_indices(50, cfg).shape == (3, 4)
    cfg = DataConfig(source="video", list_file="x", num_frames=4, twice_sample=True)
    assert sampling.eval_indices(50, cfg).shape == (2, 4) and cfg.views_per_video == 2
