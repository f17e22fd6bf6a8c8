"""The attention chain of paper Section III-D: channel attention, then the RNL block.

``SEChain`` is the "+5 [SE+RNL]" block of Table III (the paper's additive SE before the RNL), or,
with ``channel_attention="gate"``, the release's channel gate before it; the model builder puts one
at every attention position when ``attention="se+rnl"``.
"""
import keras

from rnl_keras.layers.channel_attention import ChannelGate, SqueezeExcite
from rnl_keras.layers.region_nonlocal import RegionNonLocal

CHANNEL_ATTENTIONS = ("se", "gate")


@keras.saving.register_keras_serializable(package="rnl_keras")
class SEChain(keras.layers.Layer):
    """channel attention -> RegionNonLocal, input and output (B, T, H, W, C).

    ``channel_attention="se"``: the paper's additive SE (eqs. (10)-(12)) with ``se_reduction``
    (16 by default, the value Table III's counts imply). ``"gate"``: the released channel gate
    (reduction ``gate_reduction``, its BN momentum and initialisation as released, see
    ``ChannelGate``). Other keyword arguments go to ``RegionNonLocal``.
    """

    def __init__(self, channel_attention="se", se_reduction=16, gate_reduction=2, rnl=None,
                 **rnl_kwargs):
        layer_kwargs = {k: rnl_kwargs.pop(k) for k in ("name", "dtype", "trainable")
                        if k in rnl_kwargs}
        super().__init__(**layer_kwargs)
        if channel_attention not in CHANNEL_ATTENTIONS:
            raise ValueError(f"SEChain: channel_attention must be one of {CHANNEL_ATTENTIONS}, "
                             f"got {channel_attention!r}")
        self.channel_attention = channel_attention
        self.se_reduction = int(se_reduction)
        self.gate_reduction = int(gate_reduction)
        self.rnl_kwargs = dict(rnl or {}, **rnl_kwargs)
        policy = self.dtype_policy
        if channel_attention == "se":
            self.channel = SqueezeExcite(reduction=self.se_reduction, mode="add", dtype=policy,
                                         name="se")
        else:
            self.channel = ChannelGate(reduction=self.gate_reduction, dtype=policy, name="gate")
        self.rnl = RegionNonLocal(dtype=policy, name="rnl", **self.rnl_kwargs)

    def build(self, input_shape):
        self.channel.build(input_shape)
        self.rnl.build(input_shape)

    def call(self, x, training=None):
        return self.rnl(self.channel(x, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "channel_attention": self.channel_attention,
                "se_reduction": self.se_reduction, "gate_reduction": self.gate_reduction,
                "rnl": self.rnl_kwargs}
