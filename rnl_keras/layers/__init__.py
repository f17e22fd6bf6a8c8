"""Keras 3 layers of rnl-keras: the RNL block and its companions. Clips are (B, T, H, W, C).

``RegionNonLocal`` (paper eqs. (2)-(9)), the original ``NonLocal`` block, ``SqueezeExcite`` and the
release's ``ChannelGate`` (eqs. (10)-(12)), the ``SEChain`` of Section III-D, TSM's
``TemporalShift``, and the reshapes between clips and frame batches. Every layer is serialisable
(registered under the ``rnl_keras`` package) and written with ``keras.ops``.
"""
from rnl_keras.layers.attention_chain import SEChain
from rnl_keras.layers.channel_attention import ChannelGate, SqueezeExcite
from rnl_keras.layers.nonlocal_block import NonLocal
from rnl_keras.layers.region_nonlocal import RegionNonLocal
from rnl_keras.layers.temporal_shift import TemporalShift
from rnl_keras.layers.video_reshape import ClipToFrames, FramesToClip, TemporalAverage

__all__ = ["RegionNonLocal", "NonLocal", "SqueezeExcite", "ChannelGate", "SEChain",
           "TemporalShift", "ClipToFrames", "FramesToClip", "TemporalAverage"]
