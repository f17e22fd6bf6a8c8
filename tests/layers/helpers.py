"""Read a layer's weights into the dicts numpy_reference expects, after giving them values of the
test's own choosing: the zero-initialised ones so the tests exercise every term, the projections so
the numerical checks do not depend on the layers' initial scales (``test_initializers`` checks
those)."""
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


def _uniform(rng, bound, shape):
    return rng.uniform(-bound, bound, shape).astype("float32")


def set_projection(layer, rng, bias_std=0.1):
    """Kernel U(+-sqrt(6 / (fan_in + fan_out))) (Glorot's scale), bias N(0, bias_std)."""
    fan_in, fan_out = layer.kernel.shape
    layer.kernel.assign(_uniform(rng, np.sqrt(6.0 / (fan_in + fan_out)), (fan_in, fan_out)))
    if layer.bias is not None:
        layer.bias.assign(rng.normal(0, bias_std, fan_out).astype("float32"))


def rnl_weights(layer, rng):
    set_projection(layer.theta, rng)
    set_projection(layer.w_z, rng)
    if layer.aggregation == "conv":  # U(+-sqrt(3 / (kt kh kw))): unit gain per channel
        shape = tuple(layer.f_theta_kernel.shape)
        layer.f_theta_kernel.assign(_uniform(rng, np.sqrt(3.0 / np.prod(shape[:3])), shape))
    w = {**dense_weights(layer.theta, "theta"), **dense_weights(layer.w_z, "w_z")}
    if layer.aggregation == "conv":
        w["f_theta_kernel"] = np_(layer.f_theta_kernel)
    w.update(randomise_bn(layer.bn, rng))
    return w


def nl_weights(layer, rng):
    w = {}
    for name in ("theta", "phi", "g", "w"):
        set_projection(getattr(layer, name), rng)
        w.update(dense_weights(getattr(layer, name), name))
    w.update(randomise_bn(layer.bn, rng))
    return w
