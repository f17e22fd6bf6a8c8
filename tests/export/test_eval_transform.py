"""The one test-time transform: against a float64 NumPy reference, its NumPy twin pinned to it, and
every consumer (eval pipeline, serving graph, visualiser) running it on the same decoded frames."""
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.imagenet import IMAGENET_MEAN, IMAGENET_STD
from tests.export.helpers import VIDEOS


def _resize_f64(img, new_h, new_w):
    """Bilinear resize with half-pixel centres (no antialiasing), float64, written from the
    definition: output pixel i samples the input at (i + 0.5) * in / out - 0.5, edges clamped."""
    img = np.asarray(img, np.float64)
    h, w = img.shape[:2]

    def taps(n_in, n_out):
        out = []
        for i in range(n_out):
            pos = (i + 0.5) * n_in / n_out - 0.5
            lo = int(np.floor(pos))
            frac = pos - lo
            out.append((min(max(lo, 0), n_in - 1), min(max(lo + 1, 0), n_in - 1), frac))
        return out

    rows = np.stack([(1 - f) * img[a] + f * img[b] for a, b, f in taps(h, new_h)])
    return np.stack([(1 - f) * rows[:, a] + f * rows[:, b] for a, b, f in taps(w, new_w)], axis=1)


def _reference_views(clip, size, shorter, crops):
    """float64 test views of one clip (T, H, W, 3): resize shorter side, crops, normalise."""
    h, w = clip.shape[1:3]
    scale = shorter / min(h, w)
    nh, nw = max(int(round(h * scale)), shorter), max(int(round(w * scale)), shorter)
    frames = np.stack([_resize_f64(f, nh, nw) for f in clip])
    cy, cx = (nh - size) // 2, (nw - size) // 2
    if crops == 1:
        offsets = [(cy, cx)]
    elif nw >= nh:
        offsets = [(cy, 0), (cy, (nw - size) // 2), (cy, nw - size)]
    else:
        offsets = [(0, cx), ((nh - size) // 2, cx), (nh - size, cx)]
    views = [frames[:, y:y + size, x:x + size] for y, x in offsets]
    return (np.stack(views) / 255.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)


@pytest.mark.parametrize("h, w, size, shorter, crops", [
    (30, 50, 24, 27, 3), (50, 30, 24, 24, 3), (23, 37, 16, 18, 1), (40, 40, 32, 36, 3)])
def test_transform_matches_float64_reference(h, w, size, shorter, crops):
    from rnl_keras.data.eval_transform import eval_transform
    clips = np.random.default_rng(h * w).integers(0, 256, (2, 3, h, w, 3), dtype=np.uint8)
    got = eval_transform(tf.constant(clips), size, shorter, crops, num_frames=3).numpy()
    assert got.shape == (2 * crops, 3, size, size, 3)
    want = np.concatenate([_reference_views(c, size, shorter, crops) for c in clips])
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)   # float32 vs float64


def test_default_resize_shorter_is_tsm_scale_size():
    from rnl_keras.data.eval_transform import default_resize_shorter
    from rnl_keras.export.saved_model import ServingModule  # noqa: F401 - same default below
    assert default_resize_shorter(224) == 256              # TSM: 224 * 256 // 224
    assert default_resize_shorter(256, train_size=224) == 256   # --full_res 256 crops
    assert default_resize_shorter(48) == 54
    assert default_resize_shorter(320, train_size=224) == 320   # never below the crop


def test_numpy_twin_is_pinned_to_the_transform():
    """The only NumPy copy (TFLite clients) equals the TF transform, defaults included."""
    from rnl_keras.data.eval_transform import eval_transform
    from rnl_keras.export import preprocess_frames_np, preprocess_frames_tf
    rng = np.random.default_rng(0)
    for h, w, s, r in [(240, 320, 48, None), (120, 90, 64, 72), (48, 48, 48, 48), (17, 50, 16, 20),
                       (481, 641, 224, None), (256, 340, 224, 256)]:
        frames = rng.integers(0, 256, (2, 2, h, w, 3), dtype=np.uint8)
        want = eval_transform(tf.constant(frames), s, r, 1).numpy()
        np.testing.assert_allclose(preprocess_frames_np(frames, s, r), want, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(preprocess_frames_tf(tf.constant(frames), s, r).numpy(), want)


def test_every_consumer_runs_the_same_transform(tmp_path):
    """Eval pipeline (video list), serving preprocessing and the visualiser, on the same video:
    the same views to float32 rounding (before: decode-time swscale vs tf.image.resize vs PIL)."""
    from rnl_keras.data import DataConfig, make_eval_dataset
    from rnl_keras.data.eval_transform import eval_transform
    from rnl_keras.export.predictor import read_clip
    from rnl_keras.visualization import load_clip
    video, t, s = VIDEOS[1], 4, 48          # 340 x 256: larger than the default shorter side 54
    frames = read_clip(video, t)            # full-size decode, TSN segment centres
    want = eval_transform(tf.constant(frames[None]), s, None, 1).numpy()[0]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{video} 0\n")
    cfg = DataConfig(source="video", list_file=str(listing), num_frames=t, image_size=s,
                     resize_shorter=54, test_crops=1, flip=False, deterministic=True)
    views = next(iter(make_eval_dataset(cfg, 4)))["clip"].numpy()
    assert views.shape == (1, t, s, s, 3)
    np.testing.assert_allclose(views[0], want, atol=1e-6, rtol=0)
    _, clip, _ = load_clip(video, t, s)
    np.testing.assert_allclose(clip, want, atol=1e-6, rtol=0)
