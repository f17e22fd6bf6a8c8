"""Read a layer's weights into the dicts numpy_reference expects, and give zero-initialised
weights random values so the tests exercise every term."""
import numpy as np


def np_(variable):
    return np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable, np.float64)


def randomise_bn(bn, rng, prefix="bn"):
    c = bn.gamma.shape[0]
    values = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.3, c), rng.normal(0, 0.2, c),
              rng.uniform(0.5, 2.0, c)]
    bn.set_weights([v.astype("float32") for v in values])
    return {f"{prefix}_gamma": values[0], f"{prefix}_beta": values[1],
            f"{prefix}_mean": values[2], f"{prefix}_var": values[3]}


def dense_weights(layer, name):
    out = {f"{name}_kernel": np_(layer.kernel)}
    if layer.bias is not None:
        out[f"{name}_bias"] = np_(layer.bias)
    return out


def randomise_dense(layer, rng, scale=0.3):
    weights = [rng.normal(0, scale, w.shape).astype("float32") for w in layer.get_weights()]
    layer.set_weights(weights)


def rnl_weights(layer, rng):
    w = {**dense_weights(layer.theta, "theta"), **dense_weights(layer.w_z, "w_z")}
    if layer.aggregation == "conv":
        w["f_theta_kernel"] = np_(layer.f_theta_kernel)
    w.update(randomise_bn(layer.bn, rng))
    return w


def nl_weights(layer, rng):
    w = {}
    for name in ("theta", "phi", "g", "w"):
        w.update(dense_weights(getattr(layer, name), name))
    w.update(randomise_bn(layer.bn, rng))
    return w
