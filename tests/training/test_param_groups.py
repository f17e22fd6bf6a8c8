"""--param_groups=release: the release's groups, and SGD that ends where PyTorch's SGD would.

The reference is an independent float64 NumPy simulation of ``torch.optim.SGD`` with parameter
groups (lr x lr_mult, weight_decay x decay_mult, momentum, dampening 0) after
``clip_grad_norm_``, fed with the gradients of the cross-entropy at the simulated weights.
"""
import io

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.models import tsm_resnet50
from rnl_keras.training.config import TrainConfig
from rnl_keras.training.optimizer import GroupedSGD, param_groups

T, SIZE, K = 2, 32, 3
TINY = dict(num_frames=T, image_size=SIZE, attention="rnl", stage_blocks=(1, 1, 1, 1),
            base_width=4, placement=(("res3", 0), ("res4", 0)), channel_gate_at=(("res3", 0),),
            dropout=0.0, resnet_variant="keras")   # keras: conv biases, so every group is used


def _tiny_model(seed=0):
    tf.keras.utils.set_random_seed(seed)
    return tsm_resnet50(K, **TINY)


def _expected_group(path):
    """The release's rule (ops/models.py get_optim_policies, fc_lr5, --npb), written from the
    variable's path alone: (lr_mult, decay_mult)."""
    name = path.rsplit("/", 1)[-1]
    if "_rnl/" in path:                       # inside an RNL block ('nl' in the module name)
        if name == "f_theta_kernel":
            return 2, 0                        # quirk: the mask is the module's first parameter
        return (1, 1) if name in ("kernel", "gamma") else (2, 0)   # quirk: BN gamma decayed
    if path.startswith("fc/"):
        return (5, 1) if name == "kernel" else (10, 0)
    if name in ("gamma", "beta"):
        return 1, 0
    return (1, 1) if name == "kernel" else (2, 0)   # conv1 and every other conv / linear


def test_release_groups_of_every_variable():
    model = _tiny_model()
    groups = param_groups(model, "release")
    assert list(groups) == [v.path for v in model.trainable_variables]
    for path, group in groups.items():
        assert (group.lr_mult, group.decay_mult) == _expected_group(path), (path, group)
    assert groups["conv1_conv/kernel"].name == "first_conv_weight"
    assert groups["conv1_conv/bias"].name == "first_conv_bias"
    assert groups["conv3_block1_rnl/f_theta_kernel"].name == "nl_bias"
    assert groups["conv3_block1_rnl/bn/gamma"].name == "nl_weight"
    assert groups["conv3_block1_cg/w_k/kernel"].name == "normal_weight"   # the gate: outside
    assert groups["conv3_block1_cg/bn1/gamma"].name == "bn"
    names = {g.name for g in groups.values()}
    assert names == {"first_conv_weight", "first_conv_bias", "normal_weight", "normal_bias",
                     "bn", "nl_weight", "nl_bias", "lr5_weight", "lr10_bias"}


def test_uniform_groups_are_todays_decay_filter():
    model = _tiny_model()
    groups = param_groups(model, "uniform")
    for path, group in groups.items():
        decayed = path.rsplit("/", 1)[-1].endswith("kernel")
        assert (group.lr_mult, group.decay_mult) == (1, 1 if decayed else 0), path


def test_nl_block_groups():
    """The NL baseline's theta / phi / g / W and BN follow the same rule inside the block (the
    paper's full model's counts: tests/training/test_recipe_start.py)."""
    nl = tsm_resnet50(K, **{**TINY, "attention": "nl"})
    inside = 0
    for path, group in param_groups(nl, "release").items():
        if "_nl/" in path:
            name = path.rsplit("/", 1)[-1]
            assert (group.lr_mult, group.decay_mult) == \
                ((1, 1) if name in ("kernel", "gamma") else (2, 0)), path
            inside += 1
    assert inside == 2 * (4 * 2 + 2)   # 2 blocks: theta, phi, g, w (kernel, bias), BN (2)


def _batch(seed):
    rng = np.random.default_rng(seed)
    clips = rng.normal(size=(2, T, SIZE, SIZE, 3)).astype(np.float32)
    return clips, np.array([0, 2], np.int32)


def _ce_grads(model, weights, clips, labels):
    """Gradients of the mean cross-entropy at ``weights`` (float64 arrays), as float64."""
    for v, w in zip(model.trainable_variables, weights):
        v.assign(w.astype(np.float32))
    with tf.GradientTape() as tape:
        logits = model(clips, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    return [g.numpy().astype(np.float64) for g in tape.gradient(loss, model.trainable_variables)]


def _torch_sgd(weights, grads, buffers, mults, lr, momentum, wd, clip=0.0, nesterov=False):
    """One step of torch.optim.SGD with groups (after clip_grad_norm_ on the raw gradients)."""
    if clip:
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
        grads = [g * min(1.0, clip / (norm + 1e-6)) for g in grads] if norm > clip else grads
    out = []
    for i, (w, g, (lr_mult, decay_mult)) in enumerate(zip(weights, grads, mults)):
        d = g + wd * decay_mult * w
        buffers[i] = d if buffers[i] is None else momentum * buffers[i] + d
        step = d + momentum * buffers[i] if nesterov else buffers[i]
        out.append(w - lr * lr_mult * step)
    return out


LRS = (0.05, 0.005, 0.02, 0.0005)   # a changing lr: PyTorch scales the whole buffer by the new lr


@pytest.mark.parametrize("nesterov,changing_lr", [(False, False), (True, False), (False, True),
                                                  (True, True)])
def test_grouped_sgd_matches_pytorch_sgd(nesterov, changing_lr):
    model = _tiny_model()
    groups = param_groups(model, "release")
    mults = [(groups[v.path].lr_mult, groups[v.path].decay_mult)
             for v in model.trainable_variables]
    lrs = LRS if changing_lr else (0.05,) * 4
    momentum, wd = 0.9, 0.01
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0, 1, 2], list(lrs))  # step i: lrs[i]
    opt = GroupedSGD(groups, l2=wd, learning_rate=schedule, momentum=momentum, nesterov=nesterov)
    opt.build(model.trainable_variables)
    weights = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    buffers = [None] * len(weights)
    for step in range(4):
        # The same gradient sequence goes to both (a tiny BatchNorm network is chaotic: float32
        # rounding of the weights changes later gradients by more than the tolerance).
        clips, labels = _batch(step)
        with tf.GradientTape() as tape:
            logits = model(clips, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        weights = _torch_sgd(weights, [g.numpy().astype(np.float64) for g in grads], buffers,
                             mults, lrs[step], momentum, wd, nesterov=nesterov)
    moved = 0
    for v, w, w0 in zip(model.trainable_variables, weights,
                        [v.numpy() for v in _tiny_model().trainable_variables]):
        # float32 rounding of 4 steps (the old Keras-style update misses by 0.47 here)
        np.testing.assert_allclose(v.numpy(), w, rtol=1e-5, atol=1e-6, err_msg=v.path)
        moved += not np.allclose(w, w0)
    assert moved > len(weights) // 2   # the steps did move the weights (fc bias x10, ...)


def test_trainer_release_groups_clip_then_decay(tmp_path):
    """The whole train step (clipping on the cross-entropy gradient, then decay and groups, as
    PyTorch's clip_grad_norm_ + SGD.step) ends where the NumPy simulation does. Two steps: the
    gradients are taken at the simulated weights, which later steps would chaotically amplify
    float32 rounding of (see test_grouped_sgd_matches_pytorch_sgd)."""
    from rnl_keras.training.loop import Trainer

    batches = [_batch(s) for s in range(2)]

    def train_fn(ctx, seed, batch):
        clips = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        return tf.data.Dataset.from_tensor_slices((clips, labels)).batch(batch).repeat()

    cfg = TrainConfig(
        train_list="unused", num_classes=K, model_dir=str(tmp_path / "run"), num_frames=T,
        image_size=SIZE, resize_shorter=SIZE, attention="rnl", stage_blocks=(1, 1, 1, 1),
        base_width=4, placement=(("res3", 0), ("res4", 0)), channel_gate=True, dropout=0.0,
        resnet_variant="keras", epochs=1, steps_per_epoch=2, batch_size=2, lr=0.02,
        lr_schedule="constant", momentum=0.9, weight_decay=0.01, clip_grad_norm=0.5,
        param_groups="release", checkpoint_every_steps=0, progress=False, seed=7)
    cfg.check()
    trainer = Trainer(cfg, num_train=4, train_dataset_fn=train_fn, out=io.StringIO())
    weights = [v.numpy().astype(np.float64) for v in trainer.model.trainable_variables]
    twin = tsm_resnet50(K, **cfg.model_kwargs())
    mults = [(g.lr_mult, g.decay_mult) for g in trainer.param_groups.values()]
    trainer.run()
    buffers = [None] * len(weights)
    clipped = False
    for clips, labels in batches:
        grads = _ce_grads(twin, weights, clips, labels)
        clipped |= np.sqrt(sum(float(np.sum(g * g)) for g in grads)) > 0.5
        weights = _torch_sgd(weights, grads, buffers, mults, 0.02, 0.9, 0.01, clip=0.5)
    assert clipped   # the test exercises the order clip -> decay
    for v, w in zip(trainer.model.trainable_variables, weights):
        np.testing.assert_allclose(v.numpy(), w, rtol=0, atol=1e-6, err_msg=v.path)
