"""rnl_keras.checkpoints: the released PyTorch key layout -> tsm_resnet50, checked against an
independent float64 NumPy forward written on the torch-layout arrays (torch_reference.py)."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from rnl_keras.checkpoints import (CheckpointError, detect_configuration, from_torch_state_dict,
                                   load_state_dict_into, normalize_key)
from rnl_keras.layers import ChannelGate, RegionNonLocal
from tests.checkpoints import torch_reference as ref
from tests.checkpoints.released_layout import (GATE_BLOCKS, RNL_BLOCKS, make_released_state_dict,
                                               penta_mask)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T, SIZE, CLASSES = 4, 64, 7   # res3 8x8, res4 4x4 positions per frame


@pytest.fixture(scope="module")
def released():
    rng = np.random.default_rng(42)
    state_dict = make_released_state_dict(rng, num_classes=CLASSES)
    model = from_torch_state_dict(state_dict, num_frames=T, image_size=SIZE)
    clip = rng.normal(0, 1, (1, T, SIZE, SIZE, 3)).astype("float32")
    return state_dict, model, clip


def _rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def test_released_configuration(released):
    state_dict, model, _ = released
    assert model.output_shape == (None, CLASSES)
    rnl = [l for l in model.layers if isinstance(l, RegionNonLocal)]
    assert [l.name for l in rnl] == ["conv3_block1_rnl", "conv3_block3_rnl", "conv4_block1_rnl",
                                     "conv4_block3_rnl", "conv4_block5_rnl"]
    assert [l.kernel_size for l in rnl] == [(3, 7, 7)] * 2 + [(3, 3, 3)] * 3
    gates = [l for l in model.layers if isinstance(l, ChannelGate)]
    assert len(gates) == 1 and gates[0].name.startswith("conv3_block1_")
    assert gates[0].w_v1.kernel.shape == (512, 256)                   # reduction 2 as released
    # the channel gate sits between conv3_block1 and its RNL
    order = [l.name for l in model.layers]
    assert order.index("conv3_block1_out") < order.index(gates[0].name) < order.index(
        "conv3_block1_rnl")
    # torchvision v1.5: the stride is in the 3x3 conv; no conv biases; torch BN epsilon
    assert model.get_layer("conv3_block1_1_conv").strides == (1, 1)
    assert model.get_layer("conv3_block1_2_conv").strides == (2, 2)
    assert model.get_layer("conv3_block1_2_conv").bias is None
    assert model.get_layer("conv2_block1_1_bn").epsilon == pytest.approx(1e-5)


def test_weights_transposed_as_documented(released):
    state_dict, model, _ = released
    p = "module.base_model."
    np.testing.assert_array_equal(model.get_layer("conv1_conv").kernel.numpy(),
                                  state_dict[p + "conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("conv3_block2_1_conv").kernel.numpy(),
                                  state_dict[p + "layer2.1.conv1.net.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("conv3_block1_0_bn").moving_variance.numpy(),
                                  state_dict[p + "layer2.0.block.downsample.1.running_var"])
    rnl = model.get_layer("conv4_block3_rnl")
    w = state_dict[p + "layer3.2.nl.penta.weight"]                      # (256, 32, 3, 3, 3)
    kernel = rnl.f_theta_kernel.numpy()                                # (3, 3, 3, 256)
    for i in (0, 31, 32, 200, 255):
        np.testing.assert_array_equal(kernel[..., i], w[i, i % 32])
    np.testing.assert_array_equal(rnl.theta.kernel.numpy(),
                                  state_dict[p + "layer3.2.nl.theta.weight"][:, :, 0, 0, 0].T)
    np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(),
                                  state_dict["module.new_fc.weight"].T)


def test_logits_match_numpy_reference(released):
    """Inference logits == the released PyTorch model's (NumPy float64 re-implementation)."""
    state_dict, model, clip = released
    logits = model(clip, training=False).numpy()
    expected = ref.forward(state_dict, clip, RNL_BLOCKS, GATE_BLOCKS)
    assert logits.shape == expected.shape == (1, CLASSES)
    assert _rel_err(logits, expected) < 1e-4


def test_block_parity_conv3_block1_gate_rnl(released):
    """TSM bottleneck (shift, v1.5 stride, downsample) + channel gate + RNL of layer2.0."""
    state_dict, model, clip = released
    rnl = model.get_layer("conv3_block1_rnl")
    probe = keras.Model(model.input, [model.get_layer("conv2_block3_out").output,
                                      model.get_layer("conv3_block1_out").output,
                                      rnl.input,
                                      model.get_layer("conv3_block1_rnl_to_frames").output])
    x_in, block_out, rnl_in, rnl_out = (np.asarray(v, np.float64) for v in probe(clip))
    nchw = x_in.transpose(0, 3, 1, 2)                                  # (B*T, 256, 16, 16)
    block = ref.bottleneck(nchw, state_dict, "layer2.0.block", 2, True, T)
    assert _rel_err(block_out.transpose(0, 3, 1, 2), block) < 1e-4
    wrapped = ref.wrapper(block, state_dict, "layer2.0", T, gate=True, rnl=True)
    assert _rel_err(rnl_out.transpose(0, 3, 1, 2), wrapped) < 1e-4
    # the attention rows: RegionNonLocal.attention_weights vs the release's f_div_C columns
    clip5 = block.reshape(1, T, 512, 8, 8).transpose(0, 2, 1, 3, 4)
    f, _ = ref.rnl_attention(ref.channel_gate(clip5, state_dict, "layer2.0.cg"), state_dict,
                             "layer2.0.nl")
    queries = [0, 77, 255]
    w = rnl.attention_weights(rnl_in.astype("float32"), queries).numpy()  # (1, Q, N)
    np.testing.assert_allclose(w[0], f[0][:, queries].T, atol=2e-5, rtol=1e-3)
    # a non-trivial block: the attention is neither one-hot nor uniform, and not the identity
    assert 2.0 / 256 < w.max(axis=-1).mean() < 0.9
    assert not np.allclose(rnl_out, rnl_in.reshape(rnl_out.shape), atol=1e-3)
    gate_in = clip5.transpose(0, 2, 3, 4, 1)                           # the gate changed it too
    assert gate_in.shape == rnl_in.shape and not np.allclose(gate_in, rnl_in, atol=1e-3)


def test_key_normalisation_and_detection():
    assert normalize_key("module.base_model.layer2.0.nl.theta.weight") == "layer2.0.nl.theta.weight"
    assert normalize_key("module.new_fc.bias") == "new_fc.bias"
    assert normalize_key("layer1.0.conv1.net.weight") == "layer1.0.conv1.net.weight"
    sd = make_released_state_dict(np.random.default_rng(0), num_classes=5, prefix="")
    config = detect_configuration(sd)
    assert config["attention"] == "rnl" and config["num_classes"] == 5 and config["shift"]
    assert config["placement"] == (("res3", 0), ("res3", 2), ("res4", 0), ("res4", 2), ("res4", 4))
    assert config["channel_gate_at"] == (("res3", 0),)
    plain = make_released_state_dict(np.random.default_rng(0), num_classes=5, attention=False,
                                     prefix=None)
    assert detect_configuration(plain)["attention"] == "none"
    assert detect_configuration(plain)["channel_gate_at"] == ()


def test_plain_tsm_checkpoint_without_prefix():
    """TSM's own checkpoints: same layout minus nl/cg -> attention="none"; bare keys accepted."""
    rng = np.random.default_rng(3)
    sd = make_released_state_dict(rng, num_classes=4, attention=False, prefix=None)
    assert "layer1.0.conv1.net.weight" in sd and "new_fc.weight" in sd
    model = from_torch_state_dict(sd, num_frames=2, image_size=32)
    assert not any(isinstance(l, (RegionNonLocal, ChannelGate)) for l in model.layers)
    clip = rng.normal(0, 1, (2, 2, 32, 32, 3)).astype("float32")
    assert _rel_err(model(clip, training=False), ref.forward(sd, clip)) < 1e-4


def test_all_problems_reported_in_one_error(released):
    state_dict, _, _ = released
    sd = dict(state_dict)
    del sd["module.base_model.layer3.1.bn2.running_mean"]               # missing
    sd["module.base_model.layer2.0.nl.extra.weight"] = np.zeros(3, "float32")  # unexpected
    sd["module.base_model.layer4.2.conv2.weight"] = np.zeros((512, 512, 1, 1), "float32")  # shape
    with pytest.raises(CheckpointError) as info:
        from_torch_state_dict(sd, num_frames=T, image_size=SIZE)
    message = str(info.value)
    assert "missing keys (1)" in message
    assert "module.base_model.layer3.1.bn2.running_mean" in message
    assert "unexpected keys (1)" in message and "module.base_model.layer2.0.nl.extra.weight" in message
    assert "wrong shape (1)" in message and "module.base_model.layer4.2.conv2.weight" in message
    assert "(512, 512, 1, 1)" in message and "(512, 512, 3, 3)" in message


@pytest.mark.parametrize("problem", ["missing", "unexpected", "shape"])
def test_each_problem_names_the_key(released, problem):
    state_dict, model, _ = released
    sd = dict(state_dict)
    key = "module.base_model.layer2.0.cg.W_v1.weight"
    if problem == "missing":
        del sd[key]
    elif problem == "unexpected":
        key = "module.base_model.layer2.1.nl.theta.weight"   # an RNL where the release has none
        sd[key] = np.zeros((256, 512, 1, 1, 1), "float32")
    else:
        sd[key] = sd[key].T.copy()
    before = model.get_layer("fc").kernel.numpy().copy()
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_state_dict_into(model, sd)
    np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(), before)  # nothing set


def test_penta_mask_checked(released):
    state_dict, model, _ = released
    sd = dict(state_dict)
    key = "module.base_model.layer3.0.nl.penta.mask"
    mask = penta_mask(512, (3, 3, 3))
    mask[5, 7] = 1.0                                          # not depthwise any more
    sd[key] = mask.astype("float32")
    with pytest.raises(CheckpointError, match=r"layer3\.0\.nl\.penta\.mask.*depthwise"):
        load_state_dict_into(model, sd)


def test_num_classes_mismatch(released):
    state_dict, _, _ = released
    with pytest.raises(CheckpointError, match="new_fc.weight has 7 rows"):
        from_torch_state_dict(state_dict, num_classes=400, num_frames=T, image_size=SIZE)


def test_library_does_not_import_torch():
    code = ("import sys, rnl_keras.checkpoints, rnl_keras.visualization; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_reading_pth_needs_no_torch(tmp_path):
    """A TSM-style .pth.tar of the released layout reads without torch (safe unpickler) to the
    same arrays, in a process where torch is never imported."""
    from tests.checkpoints import torch_writer

    sd = make_released_state_dict(np.random.default_rng(2), num_classes=3, attention=False)
    path = tmp_path / "TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50.pth.tar"
    torch_writer.save({"epoch": 50, "arch": "resnet50", "state_dict": sd}, path)
    code = ("import sys, numpy as np; from rnl_keras.checkpoints import load_torch_state_dict; "
            f"sd = load_torch_state_dict({str(path)!r}); "
            f"np.savez({str(tmp_path / 'out.npz')!r}, **sd); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    with np.load(tmp_path / "out.npz") as data:
        assert sorted(data.files) == sorted(sd)
        for key in sd:
            np.testing.assert_array_equal(data[key], sd[key])


def test_convert_cli_from_npz(tmp_path):
    """pipelines/convert_checkpoint.py: .npz state dict -> .keras (no torch needed)."""
    rng = np.random.default_rng(7)
    sd = make_released_state_dict(rng, num_classes=3, attention=False)
    npz = tmp_path / "tsm_segment2.npz"
    np.savez(npz, **sd)
    out = tmp_path / "sub" / "converted.keras"
    labels = tmp_path / "labels.txt"
    labels.write_text("walk\nrun\njump\n")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "pipelines", "convert_checkpoint.py"),
         f"--torch_checkpoint={npz}", f"--keras_out={out}", "--image_size=32",
         "--export=tsm", f"--export_dir={tmp_path / 'saved'}", f"--labels={labels}"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "using T=2 (from the file name)" in result.stdout
    # the SavedModel: TF Serving's versioned layout, from the same weights
    assert (tmp_path / "saved" / "tsm" / "1" / "saved_model.pb").exists()
    assert not list((tmp_path / "saved" / "tsm").glob("*.tflite"))      # no --tflite
    assert out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(".tmp_")]
    model = keras.saving.load_model(out)
    clip = rng.normal(0, 1, (1, 2, 32, 32, 3)).astype("float32")
    expected = ref.forward(sd, clip)
    assert _rel_err(model(clip, training=False), expected) < 1e-4
    import tensorflow as tf

    served = tf.saved_model.load(str(tmp_path / "saved" / "tsm" / "1"))
    probs = served.signatures["serving_float"](clip=tf.constant(clip))["probabilities"].numpy()
    softmax = np.exp(expected - expected.max()) / np.exp(expected - expected.max()).sum()
    np.testing.assert_allclose(probs, softmax, atol=1e-5)


def test_convert_cli_reports_bad_keys(tmp_path):
    sd = make_released_state_dict(np.random.default_rng(1), num_classes=3, attention=False)
    del sd["module.base_model.layer1.2.conv3.weight"]
    npz = tmp_path / "bad.npz"
    np.savez(npz, **sd)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "pipelines", "convert_checkpoint.py"),
         f"--torch_checkpoint={npz}", f"--keras_out={tmp_path / 'x.keras'}", "--image_size=32"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode != 0
    assert "module.base_model.layer1.2.conv3.weight" in result.stderr
    assert not (tmp_path / "x.keras").exists()


def test_tsm_nonlocal_checkpoint():
    """TSM's own NL checkpoints (nl.theta / nl.phi.0 / nl.g.0 / nl.W, 1x2x2 sub-sampled phi, g)."""
    from rnl_keras.layers import NonLocal

    rng = np.random.default_rng(5)
    sd = make_released_state_dict(rng, num_classes=3, prefix="module.")
    for key in [k for k in sd if ".cg." in k or ".nl.penta." in k]:
        del sd[key]
    for key in [k for k in sd if k.endswith(".nl.theta.weight")]:
        base = key[:-len("theta.weight")]
        for name in ("phi.0", "g.0"):
            sd[f"{base}{name}.weight"] = rng.normal(0, 0.05, sd[key].shape).astype("float32")
            sd[f"{base}{name}.bias"] = rng.normal(0, 0.05, sd[base + "theta.bias"].shape).astype(
                "float32")
    config = detect_configuration(sd)
    assert config["attention"] == "nl" and config["nl_subsample"] and config["channel_gate_at"] == ()
    model = from_torch_state_dict(sd, num_frames=2, image_size=32)
    nl = model.get_layer("conv4_block3_nl")
    assert isinstance(nl, NonLocal) and nl.subsample
    np.testing.assert_array_equal(nl.phi.kernel.numpy(),
                                  sd["module.base_model.layer3.2.nl.phi.0.weight"][:, :, 0, 0, 0].T)
    np.testing.assert_array_equal(nl.w.kernel.numpy(),
                                  sd["module.base_model.layer3.2.nl.W.0.weight"][:, :, 0, 0, 0].T)
