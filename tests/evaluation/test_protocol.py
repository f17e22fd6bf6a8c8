"""Test protocols (presets, overrides), score averaging, running a model at another crop size."""
import keras
import numpy as np
import pytest

from rnl_keras.evaluation.protocol import resolve_protocol


def test_presets_and_explicit_overrides():
    k400 = resolve_protocol("k400")
    assert k400 == {"test_clips": 10, "test_crops": 3, "twice_sample": False, "image_size": 256,
                    "resize_shorter": 256}
    # SSv1's 2 clips: TSM's twice_sample with TSN sampling, 2 windows with dense sampling.
    assert resolve_protocol("ssv1", "tsn")["test_clips"] == 1
    assert resolve_protocol("ssv1", "tsn")["twice_sample"] is True
    assert resolve_protocol("ssv1", "dense")["test_clips"] == 2
    assert resolve_protocol("single") == {"test_clips": 1, "test_crops": 1, "twice_sample": False,
                                          "image_size": None, "resize_shorter": None}
    over = resolve_protocol("k400", test_clips=4, test_crops=None, resize_shorter=288)
    assert (over["test_clips"], over["test_crops"], over["resize_shorter"]) == (4, 3, 288)
    assert resolve_protocol("ssv1", "tsn", test_clips=3)["twice_sample"] is False
    # An explicit crop size gets the default shorter side for it, not the preset's 256.
    assert resolve_protocol("k400", image_size=320)["resize_shorter"] is None
    with pytest.raises(ValueError, match="--protocol"):
        resolve_protocol("ucf101")


def test_score_average_softmax_and_logits_float64_reference():
    from rnl_keras.evaluation.evaluator import summarize, video_scores
    # One video, two views: view 0 is sure of class 0, view 1 prefers class 1 and gives class 0 a
    # very low logit. Probability averaging keeps class 0; logit averaging is pulled to class 1.
    logits = np.array([[10.0, 0.0, 0.0], [-30.0, 1.0, 0.0]], np.float32)
    video = np.array([0, 0])
    labels = np.array([1, 1])
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want_soft = p.mean(0)
    m = logits.astype(np.float64).mean(0)
    want_logit = np.exp(m - m.max()) / np.exp(m - m.max()).sum()
    _, soft = video_scores(logits, video, "softmax")
    _, lavg = video_scores(logits, video, "logits")
    np.testing.assert_allclose(soft[0], want_soft, atol=1e-6)
    np.testing.assert_allclose(lavg[0], want_logit, atol=1e-6)
    assert soft[0].argmax() == 0 and lavg[0].argmax() == 1
    r_soft, _ = summarize(logits, labels, video, 3, score_average="softmax")
    r_logit, _ = summarize(logits, labels, video, 3, score_average="logits")
    assert (r_soft["top1"], r_logit["top1"]) == (0.0, 1.0)
    assert r_logit["multi_view"]["score_average"] == "logits"
    with pytest.raises(ValueError, match="score_average"):
        video_scores(logits, video, "max")


def _tiny(attention, size, **kw):
    from rnl_keras.models import tsm_resnet50
    gates = (("res3", 0),) if attention in ("rnl", "se+rnl") else ()
    keras.utils.set_random_seed(3)
    return tsm_resnet50(5, num_frames=2, attention=attention, image_size=size,
                        stage_blocks=(1, 1, 1, 1), base_width=8,
                        placement=(("res3", 0), ("res4", 0)), channel_gate_at=gates, **kw)


@pytest.mark.parametrize("attention, extra", [
    ("none", {}), ("nl", {"nl_kwargs": {"subsample": True}}), ("se", {}), ("gate", {}),
    ("rnl", {"resnet_variant": "torchvision"}), ("se+rnl", {"input_convention": "caffe"})])
def test_rebuilt_model_equals_a_model_built_at_that_size(attention, extra):
    """A model built at 32 and rebuilt at 48 computes what the same weights built at 48 compute."""
    from rnl_keras.evaluation.rebuild import with_input_size
    trained = _tiny(attention, 32, **extra)
    rng = np.random.default_rng(0)
    for v in trained.weights:      # no zero-initialised block is left trivially zero
        v.assign(rng.normal(0, 0.2, v.shape).astype("float32") if "moving_variance" not in v.path
                 else rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    rebuilt = with_input_size(trained, 48)
    assert tuple(rebuilt.inputs[0].shape) == (None, 2, 48, 48, 3)
    assert with_input_size(trained, 32) is trained
    direct = _tiny(attention, 48, **extra)
    by_path = {v.path: v for v in trained.weights}
    for v in direct.weights:
        v.assign(by_path[v.path].numpy())
    clip = rng.normal(0, 1, (2, 2, 48, 48, 3)).astype("float32")
    want = np.asarray(direct(clip, training=False))
    np.testing.assert_allclose(np.asarray(rebuilt(clip, training=False)), want, atol=1e-5, rtol=0)
    assert np.abs(want).max() > 1e-3
    names = [layer.name for layer in rebuilt.layers]
    assert names == [layer.name for layer in trained.layers]
    if "input_convention" in extra:
        assert "caffe_input" in names


def test_rebuild_errors_name_the_problem():
    from rnl_keras.evaluation.rebuild import RebuildError, transfer_weights, with_input_size
    with pytest.raises(RebuildError, match="image size"):
        with_input_size(_tiny("none", 32), 0)
    with pytest.raises(RebuildError, match="first"):
        transfer_weights(_tiny("none", 32), _tiny("se", 32))
