"""Trained-like RNL weights for the benchmarks: block inputs with trained models' |p|^2 spread.

A freshly built RNL block starts with a tiny F_theta (the release's xavier-uniform of its grouped
weight, bound 0.0119 at res3), so h_i = |p_i|^2 / 2 spans ~1e-3 within a clip; the models trained
here spread it over 1e3-7e5 (``bench/feature_spread.py``; figures in the docstring of
``rnl_keras.layers.attention``). The attention's cost no longer depends on these values (its path
is fixed by static shapes), but every benchmark reports a trained-like row beside the fresh one so
that no speed figure rests on an untrained model. Trained-like: theta's kernel and bias (W_g, b_g)
scaled so that the median per-clip spread of h at the block's input equals ``TRAINED_SPREAD`` (p is
linear in v = x W_g + b_g for every F_theta: h scales with the square), and the zero-initialised BN
gamma after W_z set to 1 so that the attention reaches the output.
"""
import numpy as np

from feature_spread import block_spreads, half_norms

# Per-clip spread of h at the RNL blocks of the demo model trained here for 25 epochs
# (bench/feature_spread.py, 32 validation clips): median 2.4e4-2.6e4 at res4, 7.9e4-9.4e4 at res3.
TRAINED_SPREAD = 3.0e4


def _scale_block(block, spread, target):
    """Scale ``block``'s theta so that a measured median ``spread`` becomes ``target``."""
    rnl = getattr(block, "rnl", block)            # SEChain -> its RegionNonLocal
    factor = float(np.sqrt(target / max(spread, 1e-12)))
    for weight in (rnl.theta.kernel, rnl.theta.bias):
        weight.assign(weight * factor)
    rnl.bn.gamma.assign(np.ones(rnl.bn.gamma.shape, "float32"))
    return factor


def trained_like_layer(layer, x, target=TRAINED_SPREAD):
    """Make one built RegionNonLocal (or SEChain) trained-like for inputs like ``x``.

    Returns the measured median spread after scaling.
    """
    spread = float(np.median(np.ptp(half_norms(layer, x), axis=1)))
    _scale_block(layer, spread, target)
    return float(np.median(np.ptp(half_norms(layer, x), axis=1)))


def trained_like_model(model, clips, target=TRAINED_SPREAD):
    """Make every RNL block of ``model`` trained-like for clips like ``clips`` (blocks in order:
    each later block's input depends on the earlier ones). Returns {block: median spread}."""
    from feature_spread import rnl_probes

    for name, block in rnl_probes(model):
        spread = float(np.median(block_spreads(model, clips, only=name)[name]))
        _scale_block(block, spread, target)
    return {name: float(np.median(s)) for name, s in block_spreads(model, clips).items()}
