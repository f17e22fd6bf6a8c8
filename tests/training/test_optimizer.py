"""Schedules (per step) and the weight-decay filter (kernels only, never BatchNorm or biases)."""
import numpy as np
import pytest

from rnl_keras.training.config import TrainConfig
from rnl_keras.training.optimizer import (StepDecay, WarmupCosine, decayed_variables,
                                          make_schedule)


def _cfg(**kw):
    """The optimisation section of a config with the flat keywords ``kw``."""
    return TrainConfig(train_list="x", num_classes=8, model_dir="m", **kw).optim


def test_step_decay_every_20_epochs():
    s = make_schedule(_cfg(lr=0.01, lr_schedule="step", lr_decay_epochs=20, epochs=50), 100)
    assert isinstance(s, StepDecay)
    got = [float(s(step)) for step in (0, 1999, 2000, 3999, 4000, 4999)]
    np.testing.assert_allclose(got, [0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4], rtol=1e-5)


def test_cosine_with_linear_warmup_per_step():
    s = make_schedule(_cfg(lr=0.02, lr_schedule="cosine", warmup_epochs=5, epochs=100,
                           warmup_start_factor=0.1), 10)
    assert isinstance(s, WarmupCosine)
    np.testing.assert_allclose(float(s(0)), 0.002, rtol=1e-5)
    np.testing.assert_allclose(float(s(25)), 0.002 + 0.018 * 0.5, rtol=1e-5)   # mid warm-up
    np.testing.assert_allclose(float(s(50)), 0.02, rtol=1e-5)                  # peak
    np.testing.assert_allclose(float(s(525)), 0.01, rtol=1e-4)                 # half way
    assert float(s(1000)) < 1e-9
    assert all(float(s(i)) > float(s(i + 1)) for i in range(50, 999, 97))      # decreasing


def test_linear_scaling_rule():
    assert _cfg(lr=0.01, batch_size=256, reference_batch_size=64,
                scale_lr_with_replicas=True).effective_lr() == pytest.approx(0.04)
    assert _cfg(lr=0.01, batch_size=256).effective_lr() == pytest.approx(0.01)


def test_weight_decay_only_on_kernels():
    from rnl_keras.models import tsm_resnet50
    model = tsm_resnet50(8, num_frames=4, image_size=32, attention="rnl")
    decayed = {v.path for v in decayed_variables(model)}
    names = {v.path for v in model.trainable_variables}
    assert any(p.endswith("conv1_conv/kernel") for p in decayed)
    assert any(p.endswith("fc/kernel") for p in decayed)
    assert any("f_theta_kernel" in p for p in decayed)        # RNL's depthwise F_theta
    assert not any(p.endswith(("gamma", "beta", "bias")) for p in decayed)
    # Everything not decayed is a BatchNorm parameter or a bias.
    assert all(p.rsplit("/", 1)[-1] in ("gamma", "beta", "bias") for p in names - decayed), \
        sorted(names - decayed)[:10]
