"""The synthetic dataset: real h264 files, seeded, balanced, class defined by motion only."""
import filecmp
import os

import av
import numpy as np

from rnl_keras.data.synthetic import CLASSES, render_clip, write_synthetic_dataset


def test_files_lists_and_codec(synthetic):
    with open(synthetic["train_list"]) as f:
        rows = [ln.split() for ln in f]
    assert len(rows) == 16 and sorted(int(r[1]) for r in rows) == sorted(list(range(8)) * 2)
    with open(synthetic["classes_file"]) as f:
        assert [ln.strip() for ln in f] == list(CLASSES)
    path = os.path.join(synthetic["root"], rows[0][0])
    with av.open(path) as c:
        s = c.streams.video[0]
        assert synthetic["codec"] == "libx264"      # available in PyAV's bundled FFmpeg
        assert s.codec_context.name == "h264"
        assert (s.codec_context.width, s.codec_context.height) == (32, 32)
        assert s.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in c.decode(s)) == 12


def test_seeded(tmp_path):
    a = write_synthetic_dataset(str(tmp_path / "a"), num_train=3, num_val=1, num_frames=6,
                                size=(32, 32), seed=5)
    b = write_synthetic_dataset(str(tmp_path / "b"), num_train=3, num_val=1, num_frames=6,
                                size=(32, 32), seed=5)
    rel = open(a["train_list"]).readline().split()[0]
    assert filecmp.cmp(os.path.join(a["root"], rel), os.path.join(b["root"], rel), shallow=False)
    c = render_clip(0, 6, (32, 32), np.random.default_rng([6, 0, 0]))
    d = render_clip(0, 6, (32, 32), np.random.default_rng([5, 0, 0]))
    assert not np.array_equal(c, d)


def _shape_mask(frames):
    bg = np.median(frames, axis=0)           # the background is static, the shape moves
    return np.abs(frames.astype(float) - bg).sum(-1) > 60


def test_motion_defines_the_class():
    rng = np.random.default_rng
    for label, axis, sign in [(0, 1, -1), (1, 1, 1), (2, 0, -1), (3, 0, 1)]:
        m = _shape_mask(render_clip(label, 24, (64, 64), rng(label)))
        first = np.argwhere(m[0]).mean(0)[axis]
        last = np.argwhere(m[-1]).mean(0)[axis]
        assert sign * (last - first) > 8, (CLASSES[label], first, last)
    grow = render_clip(4, 24, (64, 64), rng(9))
    shrink = render_clip(5, 24, (64, 64), rng(9))
    # The same draw: shrink is grow played backwards, so the unordered set of frames is the same.
    np.testing.assert_array_equal(grow, shrink[::-1])
    cw, ccw = render_clip(6, 24, (64, 64), rng(3)), render_clip(7, 24, (64, 64), rng(3))
    np.testing.assert_array_equal(cw[0], ccw[0])     # same first frame, different motion
    assert not np.array_equal(cw[5], ccw[5])
