"""The initialisers of the authors' PyTorch release, as Keras initializers (docs/fidelity.md).

* ``torch_default_kernel()`` / ``torch_default_bias(fan_in)``: PyTorch's default for ``nn.Conv3d``
  and ``nn.Linear`` (``kaiming_uniform_(a=sqrt(5))`` on the weight, then the bias uniform):

      weight ~ U(-b, b),  bias ~ U(-b, b),  b = gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in)
      (gain = sqrt(2 / (1 + a^2)) = sqrt(1/3)),

  fan_in = the input channels of a 1x1x1 conv / Linear. The kernel is Keras'
  ``VarianceScaling(1/3, "fan_in", "uniform")`` (limit sqrt(3 * scale / fan_in)); the bias, whose
  own shape does not carry fan_in, a ``RandomUniform(-b, b)``.
* ``ReleaseDepthwiseXavierUniform``: the release's F_theta, a grouped conv weight
  (C', C'/g, kt, kh, kw) with g = max(C' // 32, 1) groups, ``xavier_uniform_`` and then masked to
  its diagonal; we store only the diagonal, as a depthwise kernel (kt, kh, kw, C'), drawn from
  the same uniform:

      b = sqrt(6 / (fan_in + fan_out)),  fan_in = (C' // g) * k,  fan_out = C' * k,  k = kt*kh*kw

  (0.0119 at res3, C' = 256, 3x7x7; 0.0202 at res4, C' = 512, 3x3x3; C' < 64: g = 1, b =
  sqrt(6 / (2 C' k))).
* ``clone_initializer``: a Keras 3 initializer created without a seed draws its seed once and
  returns the *same* values on every call, so one instance shared by several sub-layers gives them
  identical kernels. Every sub-layer gets its own clone (keras-hub's ``clone_initializer``).
"""
import math
import random

import keras


def torch_default_bound(fan_in):
    """1 / sqrt(fan_in): the half-width of PyTorch's default conv / Linear weight and bias init."""
    fan_in = int(fan_in)
    if fan_in < 1:
        raise ValueError(f"torch_default_bound: fan_in must be >= 1, got {fan_in}")
    return 1.0 / math.sqrt(fan_in)


def torch_default_kernel():
    """A new PyTorch-default kernel initializer: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in from
    the kernel's shape (a Dense kernel (fan_in, units))."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in",
                                              distribution="uniform")


def torch_default_bias(fan_in):
    """A new PyTorch-default bias initializer of a layer with ``fan_in`` inputs:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = torch_default_bound(fan_in)
    return keras.initializers.RandomUniform(minval=-bound, maxval=bound)


def f_theta_bound(channels, kernel_size):
    """The release's xavier-uniform bound of F_theta for C' = ``channels`` and (kt, kh, kw)."""
    channels = int(channels)
    k = math.prod(int(s) for s in kernel_size)
    if channels < 1 or k < 1:
        raise ValueError(f"f_theta_bound: expected channels >= 1 and a positive kernel size, got "
                         f"{channels} and {tuple(kernel_size)}")
    groups = max(channels // 32, 1)
    fan_in, fan_out = (channels // groups) * k, channels * k
    return math.sqrt(6.0 / (fan_in + fan_out))


@keras.saving.register_keras_serializable(package="rnl_keras")
class ReleaseDepthwiseXavierUniform(keras.initializers.Initializer):
    """U(-b, b) with the release's F_theta bound ``f_theta_bound(C', (kt, kh, kw))`` for a
    depthwise kernel of shape (kt, kh, kw, C').

    Args:
        seed: int or None. None draws a seed once, at construction (like Keras' own initializers,
            from Python's ``random``, which ``keras.utils.set_random_seed`` seeds).
    """

    def __init__(self, seed=None):
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"ReleaseDepthwiseXavierUniform: seed must be an int or None, "
                             f"got {seed!r}")
        self._init_seed = seed
        self.seed = seed if seed is not None else random.randint(1, int(1e9))

    def __call__(self, shape, dtype=None):
        if len(shape) != 4:
            raise ValueError(f"ReleaseDepthwiseXavierUniform expects a depthwise kernel "
                             f"(kt, kh, kw, C'), got shape {tuple(shape)}")
        bound = f_theta_bound(shape[-1], shape[:3])
        return keras.random.uniform(shape, minval=-bound, maxval=bound, dtype=dtype,
                                    seed=self.seed)

    def get_config(self):
        return {"seed": self._init_seed}


def clone_initializer(initializer, index=0):
    """A fresh copy of ``initializer`` for one sub-layer.

    Args:
        initializer: a Keras initializer instance, or anything ``keras.initializers.get`` takes.
        index: the sub-layer's position among those sharing the user's initializer. An int seed is
            offset by it (seed + index), so seeded initializers give the sub-layers independent yet
            reproducible draws; an unseeded one draws a new seed per clone.
    Returns:
        A new initializer instance (never the one passed in); a plain function is returned as is.
    """
    initializer = keras.initializers.get(initializer)
    if not isinstance(initializer, keras.initializers.Initializer):
        return initializer  # a plain function holds no state to share: nothing to clone
    config = dict(initializer.get_config())
    if isinstance(config.get("seed"), int):
        config["seed"] = config["seed"] + int(index)
    return initializer.__class__.from_config(config)


def optional_initializer(identifier):
    """``None`` (meaning: the release's initialisation) or a Keras initializer instance."""
    return None if identifier is None else keras.initializers.get(identifier)


def serialize_optional(initializer):
    """The config entry of an ``optional_initializer``: None or its Keras serialisation."""
    return None if initializer is None else keras.initializers.serialize(initializer)


def conv_initializers(kernel_initializer, bias_initializer, fan_in, index):
    """Fresh (kernel, bias) initializers for one 1x1x1 conv / Dense sub-layer.

    Args:
        kernel_initializer, bias_initializer: the user's (cloned with ``index``), or None for
            PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both.
        fan_in: the sub-layer's input channels.
        index: the sub-layer's position among those sharing the user's initializers.
    Returns:
        (kernel initializer, bias initializer), new instances owned by this sub-layer only.
    """
    kernel = (torch_default_kernel() if kernel_initializer is None
              else clone_initializer(kernel_initializer, index))
    bias = (torch_default_bias(fan_in) if bias_initializer is None
            else clone_initializer(bias_initializer, index))
    return kernel, bias
