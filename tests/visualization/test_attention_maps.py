"""Attention-map figures (paper Figs. 1, 4, 5) on a shipped real clip with small random models."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from rnl_keras import visualization as vis
from rnl_keras.layers import NonLocal, RegionNonLocal
from rnl_keras.models.tsm_resnet import tsm_resnet50

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VIDEO = os.path.join(ROOT, "tests", "data", "carphone_pristine.mp4")
T, S, GAP, PANEL_GAP = 4, 96, 4, 16    # tiles S x S, GAP pixels between / around, panels 16 apart
PLACEMENT = (("res3", 0), ("res4", 0))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _sharpen(model, rng):
    """Make the random blocks non-trivial whatever their initial scales (the release's start
    with nearly uniform attention): peaky attention (embedding kernels U(+-3 sqrt(6 / (fan_in +
    fan_out))), F_theta U(+-sqrt(3 / (kt kh kw)))) and a non-zero output BN."""
    for layer in model.layers:
        if isinstance(layer, (RegionNonLocal, NonLocal)):
            for dense in (layer.theta,) + ((layer.phi,) if isinstance(layer, NonLocal) else ()):
                fan_in, fan_out = dense.kernel.shape
                bound = 3.0 * np.sqrt(6.0 / (fan_in + fan_out))
                dense.kernel.assign(rng.uniform(-bound, bound, (fan_in, fan_out)).astype("float32"))
            if getattr(layer, "aggregation", None) == "conv":
                shape = tuple(layer.f_theta_kernel.shape)
                bound = np.sqrt(3.0 / np.prod(shape[:3]))
                layer.f_theta_kernel.assign(rng.uniform(-bound, bound, shape).astype("float32"))
            c = layer.bn.gamma.shape[0]
            layer.bn.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))


@pytest.fixture(scope="module")
def rnl_model():
    keras.utils.set_random_seed(5)
    model = tsm_resnet50(5, num_frames=T, image_size=S, attention="rnl", placement=PLACEMENT,
                         resnet_variant="torchvision")
    _sharpen(model, np.random.default_rng(5))
    return model


@pytest.fixture(scope="module")
def nl_model():
    keras.utils.set_random_seed(6)
    model = tsm_resnet50(5, num_frames=T, image_size=S, attention="nl", placement=PLACEMENT,
                         nl_kwargs={"subsample": True})
    _sharpen(model, np.random.default_rng(6))
    return model


@pytest.fixture(scope="module")
def clip():
    return vis.load_clip(VIDEO, T, S)


def test_points_grid_and_colormap():
    assert vis.parse_points("3:112,80; 3:20,200") == [vis.Point(3, 112, 80), vis.Point(3, 20, 200)]
    with pytest.raises(ValueError, match="FRAME:X,Y"):
        vis.parse_points("3:112")
    assert vis.grid_points("2x3", 1, 60, 90) == [
        vis.Point(1, 15, 15), vis.Point(1, 45, 15), vis.Point(1, 75, 15),
        vis.Point(1, 15, 45), vis.Point(1, 45, 45), vis.Point(1, 75, 45)]
    colours = vis.jet(np.array([0.0, 0.5, 1.0]))
    assert colours.dtype == np.uint8 and colours.shape == (3, 3)
    assert colours[0, 2] > 100 and colours[0, 0] == 0          # low: blue
    assert colours[2, 0] > 100 and colours[2, 2] == 0          # high: red
    assert vis.figure_size(2, 4, 96, 96) == (4 * 96 + 5 * 4, 2 * 96 + 3 * 4)
    assert vis.figure_size(2, 4, 96, 96, panels=2) == (2 * (4 * 96 + 5 * 4) + 16, 2 * 96 + 3 * 4)


def test_load_clip_real_video(clip):
    frames, normalised, indices = clip
    assert frames.shape == (T, S, S, 3) and frames.dtype == np.uint8
    assert normalised.shape == (T, S, S, 3) and normalised.dtype == np.float32
    assert indices.tolist() == sorted(set(indices.tolist())) and len(indices) == T
    assert frames.std() > 10                                     # real content, not a blank


def test_maps_are_the_chosen_rows(rnl_model, clip):
    """Point (t, x, y) -> query t*H*W + (y // 8)*W + x // 8 of the block input grid."""
    _, normalised, _ = clip
    points = [vis.Point(1, 20, 30), vis.Point(2, 70, 60)]
    result = vis.compute_attention_maps(rnl_model, normalised, points)
    assert result.block == "conv3_block1_rnl" and result.feature_grid == (T, 12, 12)
    assert result.stride == (8.0, 8.0) and result.key_grid == (T, 12, 12)
    assert result.positions.tolist() == [1 * 144 + 3 * 12 + 2, 2 * 144 + 7 * 12 + 8]
    layer = rnl_model.get_layer("conv3_block1_rnl")
    block_input = vis.block_input_model(rnl_model, layer)([normalised[None]]).numpy()
    queries, keys, _ = (t.numpy() for t in layer.embeddings(block_input))
    logits = queries[0, result.positions] @ keys[0].T
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(result.maps.reshape(2, -1), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.maps.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    # res4 block: stride 16
    res4 = vis.compute_attention_maps(rnl_model, normalised, points, block="conv4_block1_rnl")
    assert res4.stride == (16.0, 16.0) and res4.maps.shape == (2, T, 6, 6)
    assert res4.positions.tolist() == [1 * 36 + 1 * 6 + 1, 2 * 36 + 3 * 6 + 4]
    with pytest.raises(ValueError, match="conv3_block1_rnl"):
        vis.compute_attention_maps(rnl_model, normalised, points, block="conv3_block1_1_conv")
    with pytest.raises(ValueError, match="outside the clip"):
        vis.compute_attention_maps(rnl_model, normalised, [vis.Point(0, S, 3)])


def test_subsampled_keys(nl_model, clip):
    _, normalised, _ = clip
    result = vis.compute_attention_maps(nl_model, normalised, [vis.Point(0, 5, 5)])
    assert result.block == "conv3_block1_nl"
    assert result.feature_grid == (T, 12, 12) and result.key_grid == (T, 6, 6)
    assert result.maps.shape == (1, T, 6, 6)


def test_figure_on_real_clip(rnl_model, clip, tmp_path):
    frames, normalised, _ = clip
    points = [vis.Point(1, 20, 30), vis.Point(1, 70, 60), vis.Point(2, 48, 80)]
    result = vis.compute_attention_maps(rnl_model, normalised, points)
    # the RNL maps depend on the reference point
    assert not np.allclose(result.maps[0], result.maps[1], atol=1e-4)
    assert np.abs(result.maps[0] - result.maps[1]).max() > 0.1 * result.maps[:2].max()
    image = vis.render_attention_figure(frames, [result.maps], points)
    path = tmp_path / "attention.png"
    image.save(path)
    with Image.open(path) as png:
        assert png.size == (T * S + (T + 1) * GAP, 3 * S + 4 * GAP) == (404, 304)
        pixels = np.asarray(png.convert("RGB"))
    for row, p in enumerate(points):      # the red dot sits on the point, in its frame's tile
        y, x = GAP + row * (S + GAP) + p.y, GAP + p.frame * (S + GAP) + p.x
        assert tuple(pixels[y, x]) == (255, 0, 0)
    # tiles are the frames blended with the heat-map: close to, but not equal to, the frame
    tile = pixels[GAP:GAP + S, GAP:GAP + S].astype(float)
    assert 0 < np.abs(tile - frames[0]).mean() < 128
    assert (pixels[:GAP] == 255).all()                           # white margins


def test_cli_model_files_side_by_side(rnl_model, nl_model, tmp_path):
    rnl_path, nl_path = tmp_path / "rnl.keras", tmp_path / "nl.keras"
    rnl_model.save(rnl_path)
    nl_model.save(nl_path)
    out = tmp_path / "figs" / "cmp.png"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "pipelines", "visualize_attention.py"),
         f"--model={rnl_path}", f"--model2={nl_path}", f"--video={VIDEO}",
         "--points=1:20,30;2:70,60", "--block=conv4_block1_rnl", f"--out={out}", "--save_npy"],
        cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    with Image.open(out) as png:
        assert png.size == (2 * (T * S + (T + 1) * GAP) + PANEL_GAP, 2 * S + 3 * GAP)
    first, second = np.load(out.with_suffix(".npy")), np.load(tmp_path / "figs" / "cmp_2.npy")
    assert first.shape == (2, T, 6, 6) and second.shape == (2, T, 6, 6)  # res4 / NL sub-sampled
    np.testing.assert_allclose(first.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    assert "conv4_block1_rnl" in result.stdout and "conv3_block1_nl" in result.stdout


def test_cli_checkpoint_dir_with_grid(tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(8)
    model = tsm_resnet50(3, num_frames=T, image_size=64, attention="rnl")
    tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt" / "ckpt"))
    out = tmp_path / "grid.png"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "pipelines", "visualize_attention.py"),
         f"--checkpoint={tmp_path / 'ckpt'}", "--attention=rnl", "--num_classes=3",
         f"--num_frames={T}", "--image_size=64", f"--video={VIDEO}", "--grid=2x2",
         "--grid_frame=3", f"--out={out}", "--save_npy"],
        cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    with Image.open(out) as png:
        assert png.size == (T * 64 + (T + 1) * GAP, 4 * 64 + 5 * GAP)
    maps = np.load(tmp_path / "grid.npy")
    assert maps.shape == (4, T, 8, 8)
    # the restored weights, not a fresh random init, made the maps
    _, normalised, _ = vis.load_clip(VIDEO, T, 64)
    points = vis.grid_points("2x2", 3, 64, 64)
    expected = vis.compute_attention_maps(model, normalised, points).maps
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
