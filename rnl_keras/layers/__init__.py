"""Keras 3 layers of rnl-keras. Clip tensors are channels-last (B, T, H, W, C)."""
from rnl_keras.layers.attention_chain import SEChain
from rnl_keras.layers.channel_attention import ChannelGate, SqueezeExcite
from rnl_keras.layers.nonlocal_block import NonLocal
from rnl_keras.layers.region_nonlocal import RegionNonLocal
from rnl_keras.layers.temporal_shift import TemporalShift
from rnl_keras.layers.video_reshape import ClipToFrames, FramesToClip, TemporalAverage

__all__ = ["RegionNonLocal", "NonLocal", "SqueezeExcite", "ChannelGate", "SEChain",
           "TemporalShift", "ClipToFrames", "FramesToClip", "TemporalAverage"]
