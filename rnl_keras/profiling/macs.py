"""Parameters and multiply-adds (MACs) of a built Keras model, from its layers and their shapes.

Two conventions, both per clip (one batch element of the model input):

* ``paper``: what the paper's Table III counts ("FLOPs" that are multiply-adds, docs/fidelity.md
  section 8): convolutions and dense layers (k_h k_w C_in / groups per output element, no bias),
  and BatchNorm as 2 per element (normalise + affine, as the usual PyTorch counters do). The RNL
  block contributes its two 1x1x1 convs (theta, W_z) and BN only; the NL block its four 1x1x1
  convs and BN; SE / gate their small dense layers (and the gate's W_k conv) and BN.
* ``true``: ``paper`` plus every multiply-add the paper leaves out: the attention products
  (Gaussian / cosine: Q K^T and W V, 2 N_q N_k C'; dot product as computed, k^T v then q (k^T v)),
  F_theta's channel-wise conv (N C' k_t k_h k_w; also the average pooling, which is the same
  conv; max pooling has no multiply-adds), and the pooling products of SE / gate (N C each).
  Element-wise adds, activations, softmax exponentials and max pooling are not multiply-adds and
  are counted in neither. The true attention count is the nominal 2 N_q N_k C': the symmetric
  Gaussian path of ``rnl_keras.layers.attention.kernels`` executes ~3/4 of it (half of Q K^T), reported separately
  as ``executed``.

The walk follows the functional graph node by node; tensors carry a "rows per clip" factor
(ClipToFrames multiplies it by T, FramesToClip / TemporalAverage divide it by T), so per-frame
layers are counted T times per clip. Attention blocks are counted from their config and input
shape (``layer_macs``).
"""

import keras
import numpy as np

from rnl_keras.layers import (ChannelGate, ClipToFrames, FramesToClip, NonLocal, RegionNonLocal,
                              SEChain, SqueezeExcite, TemporalAverage)

# Paper Table III (Kinetics-400, 8 x 224 x 224, 400 classes): GMACs ("FLOPs (G)") and M params.
TABLE_III = {
    "none": (32.89, 24.33), "se": (32.89, 24.79), "gate": (32.90, 24.79),
    "nl": (49.38, 31.69), "rnl": (41.15, 35.48), "se+rnl": (41.16, 35.95),
}


_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _prod(values):
    return int(np.prod([int(v) for v in values])) if len(values) else 1


def _shape(tensor):
    return tuple(tensor.shape)


def _key_rows(t, h, w, subsample):
    return t * (h // 2) * (w // 2) if subsample else t * h * w


def _attention_macs(n_q, n_k, c, similarity):
    if similarity == "dot":
        return n_k * c * c + n_q * c * c
    return 2 * n_q * n_k * c


def _rnl_macs(layer, shape):
    _, t, h, w, channels = shape
    n = t * h * w
    inter = max(channels // layer.reduction, 1)
    convs = 2 * n * channels * inter                     # theta (x W_g) and W_z
    bn = 2 * n * channels
    kt, kh, kw = layer.kernel_size
    f_theta = n * inter * kt * kh * kw if layer.aggregation in ("conv", "avg") else 0
    n_k = _key_rows(t, h, w, layer.key_subsample)
    attention = _attention_macs(n, n_k, inter, layer.similarity)
    executed = attention
    if layer.similarity in ("gaussian", "cosine") and not layer.key_subsample:
        executed = attention - n * n * inter // 2       # S = P P^T: half of Q K^T is built
    return {"paper": convs + bn, "true": convs + bn + f_theta + attention,
            "executed": convs + bn + f_theta + executed, "attention": attention,
            "f_theta": f_theta}


def _nl_macs(layer, shape):
    _, t, h, w, channels = shape
    n = t * h * w
    inter = max(channels // layer.reduction, 1)
    convs = 4 * n * channels * inter                     # theta, phi, g, W
    bn = 2 * n * channels
    attention = _attention_macs(n, _key_rows(t, h, w, layer.subsample), inter, "gaussian")
    return {"paper": convs + bn, "true": convs + bn + attention,
            "executed": convs + bn + attention, "attention": attention, "f_theta": 0}


def _se_macs(layer, shape):
    channels = shape[-1]
    n = _prod(shape[1:-1])
    hidden = max(channels // layer.reduction, 1)
    paper = 2 * channels * hidden + (2 * hidden if layer.mode == "add" else 0)
    pooling = n * channels * (2 if layer.mode == "scale" else 1)  # mean (+ the gate's product)
    return {"paper": paper, "true": paper + pooling, "executed": paper + pooling,
            "attention": 0, "f_theta": 0}


def _gate_macs(layer, shape):
    channels = shape[-1]
    n = _prod(shape[1:-1])
    hidden = max(channels // layer.reduction, 1)
    paper = n * channels + 2 * channels * hidden + 2 * hidden   # W_k conv, W_v1, W_v2, BN
    return {"paper": paper, "true": paper + n * channels, "executed": paper + n * channels,
            "attention": 0, "f_theta": 0}


def _add(a, b):
    return {k: a.get(k, 0) + b.get(k, 0) for k in set(a) | set(b)}


def layer_macs(layer, input_shape, output_shape):
    """MACs of one call of ``layer`` per element of its batch axis: dict paper/true/executed."""
    if isinstance(layer, SEChain):
        return _add(layer_macs(layer.channel, input_shape, input_shape),
                    layer_macs(layer.rnl, input_shape, input_shape))
    if isinstance(layer, RegionNonLocal):
        return _rnl_macs(layer, input_shape)
    if isinstance(layer, NonLocal):
        return _nl_macs(layer, input_shape)
    if isinstance(layer, SqueezeExcite):
        return _se_macs(layer, input_shape)
    if isinstance(layer, ChannelGate):
        return _gate_macs(layer, input_shape)
    macs = 0
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        macs = _prod(output_shape[1:]) * _prod(layer.kernel_size)
    elif isinstance(layer, _CONVS):
        in_channels = input_shape[-1]
        groups = getattr(layer, "groups", 1) or 1
        macs = _prod(output_shape[1:]) * _prod(layer.kernel_size) * in_channels // groups
    elif isinstance(layer, keras.layers.Dense):
        macs = _prod(input_shape[1:]) * layer.units
    elif isinstance(layer, keras.layers.EinsumDense):
        raise NotImplementedError("EinsumDense is not counted")
    elif isinstance(layer, keras.layers.BatchNormalization):
        macs = 2 * _prod(input_shape[1:])
    elif isinstance(layer, keras.Model):
        raise NotImplementedError("nested models are not counted; pass the inner model")
    return {"paper": macs, "true": macs, "executed": macs, "attention": 0, "f_theta": 0}


def _rows_factor(layer, in_shape, factor):
    if isinstance(layer, ClipToFrames):
        return factor * in_shape[1]
    if isinstance(layer, (FramesToClip, TemporalAverage)):
        return factor / layer.num_frames
    return factor


def count_params(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    return {"trainable": trainable, "non_trainable": total - trainable, "total": total}


def count_macs(model, per_layer=False):
    """Multiply-adds of one clip through ``model`` (a built functional Keras model).

    Returns ``{"paper": int, "true": int, "executed": int, "attention": int, "f_theta": int,
    "params": {...}, "layers": [...] (if per_layer)}``. Every input's batch element counts as one
    clip.
    """
    factor = {}
    for tensor in model.inputs:
        factor[id(tensor)] = 1.0
    totals = {"paper": 0.0, "true": 0.0, "executed": 0.0, "attention": 0.0, "f_theta": 0.0}
    rows = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.operation
            inputs = [t for t in node.input_tensors if hasattr(t, "shape")]
            outputs = [t for t in node.output_tensors if hasattr(t, "shape")]
            if not inputs:
                continue
            f_in = factor.get(id(inputs[0]), 1.0)
            f_out = _rows_factor(layer, _shape(inputs[0]), f_in)
            for t in outputs:
                factor[id(t)] = f_out
            if isinstance(layer, keras.layers.InputLayer):
                continue
            macs = layer_macs(layer, _shape(inputs[0]), _shape(outputs[0]))
            for key in totals:
                totals[key] += f_in * macs[key]
            if per_layer and macs["true"]:
                rows.append({"name": layer.name, "type": type(layer).__name__,
                             **{k: f_in * macs[k] for k in ("paper", "true")}})
    out = {k: int(round(v)) for k, v in totals.items()}
    out["params"] = count_params(model)
    if per_layer:
        out["layers"] = rows
    return out


def profile_models(attentions, num_frames=8, image_size=224, num_classes=400, rnl_kwargs=None,
                   nl_kwargs=None, **model_kwargs):
    """Build each model of ``attentions`` and count it: {attention: count_macs(...)}."""
    from rnl_keras.models.tsm_resnet import tsm_resnet50

    results = {}
    for attention in attentions:
        model = tsm_resnet50(num_classes, num_frames=num_frames, attention=attention,
                             image_size=image_size, rnl_kwargs=rnl_kwargs, nl_kwargs=nl_kwargs,
                             **model_kwargs)
        results[attention] = count_macs(model)
        del model
        keras.backend.clear_session()
    return results
