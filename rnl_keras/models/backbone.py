"""The TSM-ResNet backbone, laid out from a :class:`~rnl_keras.models.spec.NetworkSpec`.

A 2D ResNet applied to every frame (clips travel as (B*T, H, W, C) frame batches), with the
temporal shift (TSM, fold_div 8) on the input of conv1 of every bottleneck's residual branch
("blockres") and the temporal size kept constant (paper Section III-E, Table I). Attention blocks
go after the bottlenecks the spec marks. Layer names follow ``keras.applications.ResNet50``
(``conv3_block1_1_conv``...; res3 = Keras' "conv3" stage, res3[0] = ``conv3_block1``), so its
weight files load by name. The backbone maps a clip to per-frame pooled features (B, T, C); the
classifier (:mod:`rnl_keras.models.classifier`) is built on it.
"""
import keras
from keras import layers

from rnl_keras.layers import (ChannelGate, ClipToFrames, FramesToClip, NonLocal, RegionNonLocal,
                              SEChain, SqueezeExcite, TemporalShift)
from rnl_keras.models import pretrained
from rnl_keras.models.input_adapter import INPUT_CONVENTIONS, CaffeInputAdapter
from rnl_keras.models.spec import TABLE_I, check_placement, validate

ATTENTIONS = ("none", "nl", "se", "gate", "rnl", "se+rnl")
VARIANTS = ("keras", "torchvision")
FEATURES_LAYER = "frame_features"   # the backbone's last layer: (B*T, C) -> (B, T, C)


def attention_block(kind, name, region, rnl_kwargs=None, nl_kwargs=None, se_reduction=16,
                    dtype=None):
    """The attention block of ``kind`` named after its bottleneck ``name`` (``conv3_block1``).

    Args:
        kind: one of :data:`ATTENTIONS` but ``"none"``.
        name: the bottleneck it follows; the block is ``{name}_rnl`` / ``_sernl`` / ``_nl`` /
            ``_se`` / ``_gate``.
        region: the RNL region (kt, kh, kw) (F_theta's kernel, eq. 9), unless ``rnl_kwargs``
            sets ``kernel_size``.
        rnl_kwargs / nl_kwargs: extra arguments of RegionNonLocal (and SEChain) / NonLocal.
        se_reduction: reduction of the "se" / "gate" / "se+rnl" blocks.
        dtype: the blocks' dtype policy.
    Returns:
        a (B, T, H, W, C) -> (B, T, H, W, C) layer.
    """
    rnl_kwargs = dict(rnl_kwargs or {})
    rnl_kwargs.setdefault("kernel_size", tuple(region))
    if kind == "rnl":
        return RegionNonLocal(name=f"{name}_rnl", dtype=dtype, **rnl_kwargs)
    if kind == "se+rnl":
        return SEChain("se", se_reduction=se_reduction, name=f"{name}_sernl", dtype=dtype,
                       **rnl_kwargs)
    if kind == "nl":
        return NonLocal(name=f"{name}_nl", dtype=dtype, **(nl_kwargs or {}))
    if kind == "se":
        return SqueezeExcite(reduction=se_reduction, mode="scale", name=f"{name}_se", dtype=dtype)
    if kind == "gate":
        # Table III's "+5 GC" (24.79M) is GCNet's ratio 1/16; the release's single gate uses 1/2.
        return ChannelGate(reduction=se_reduction, name=f"{name}_gate", dtype=dtype)
    raise ValueError(f"attention must be one of {ATTENTIONS}, got {kind!r}")


class _Layout:
    """Lays the backbone's functional graph out; holds the options every layer shares."""

    def __init__(self, num_frames, shift, fold_div, variant, use_conv_bias, bn_epsilon,
                 bn_momentum):
        self.num_frames = num_frames
        self.shift = shift
        self.fold_div = fold_div
        self.variant = variant
        self.use_bias = use_conv_bias
        self.bn_epsilon = bn_epsilon
        self.bn_momentum = bn_momentum

    def bn(self, name):
        return layers.BatchNormalization(axis=-1, epsilon=self.bn_epsilon,
                                         momentum=self.bn_momentum, name=name)

    def stem(self, x, stem):
        """conv1 and pool1 of Table I (torchvision's padding: half the kernel on every side)."""
        x = layers.ZeroPadding2D(stem.kernel // 2, name="conv1_pad")(x)
        x = layers.Conv2D(stem.width, stem.kernel, strides=stem.stride, use_bias=self.use_bias,
                          name="conv1_conv")(x)
        x = self.bn("conv1_bn")(x)
        x = layers.Activation("relu", name="conv1_relu")(x)
        x = layers.ZeroPadding2D(stem.pool // 2, name="pool1_pad")(x)
        return layers.MaxPooling2D(stem.pool, strides=stem.pool_stride, name="pool1_pool")(x)

    def conv_bn(self, x, filters, kernel, stride, name, relu=True):
        if kernel == 3 and stride > 1:
            # torchvision pads 1 on every side; "same" would pad (0, 1) at stride 2.
            x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
            padding = "valid"
        else:
            padding = "same"
        x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=self.use_bias,
                          name=f"{name}_conv")(x)
        x = self.bn(f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x

    def bottleneck(self, x, filters, stride, shortcut_conv, name):
        if shortcut_conv:
            shortcut = layers.Conv2D(4 * filters, 1, strides=stride, use_bias=self.use_bias,
                                     name=f"{name}_0_conv")(x)
            shortcut = self.bn(f"{name}_0_bn")(shortcut)
        else:
            shortcut = x
        if self.shift:
            x = TemporalShift(self.num_frames, self.fold_div, name=f"{name}_shift")(x)
        # Keras' ResNet50 (v1) strides the first 1x1 conv; torchvision's (v1.5, TSM's) the 3x3.
        s1, s3 = (stride, 1) if self.variant == "keras" else (1, stride)
        x = self.conv_bn(x, filters, 1, s1, f"{name}_1")
        x = self.conv_bn(x, filters, 3, s3, f"{name}_2")
        x = self.conv_bn(x, 4 * filters, 1, 1, f"{name}_3", relu=False)
        x = layers.Add(name=f"{name}_add")([shortcut, x])
        return layers.Activation("relu", name=f"{name}_out")(x)

    def clip_block(self, x, block, name):
        """Apply a (B, T, H, W, C) block to a frame batch."""
        clip = FramesToClip(self.num_frames, name=f"{name}_to_clip")(x)
        return ClipToFrames(name=f"{name}_to_frames")(block(clip))

    def stage(self, x, stage, make_block, gates, gate_kwargs):
        """One residual stage; ``make_block(stage, block_name)`` gives its attention blocks."""
        for index in range(stage.blocks):
            block_name = f"{stage.keras_name}_block{index + 1}"
            x = self.bottleneck(x, stage.width, stage.stride if index == 0 else 1, index == 0,
                                block_name)
            if (stage.name, index) in gates:
                gate = ChannelGate(name=f"{block_name}_cg", **(gate_kwargs or {}))
                x = self.clip_block(x, gate, gate.name)
            if stage.attention[index]:
                block = make_block(stage, block_name)
                x = self.clip_block(x, block, block.name)
        return x


def variant_settings(resnet_variant, use_conv_bias=None, bn_epsilon=None):
    """``(use_conv_bias, bn_epsilon)``, each ``None`` taken from the variant: Keras' ResNet50 has
    conv biases and eps 1.001e-5, torchvision's none and 1e-5."""
    if resnet_variant not in VARIANTS:
        raise ValueError(f"resnet_variant must be one of {VARIANTS}, got {resnet_variant!r}")
    defaults = pretrained.REQUIRED[resnet_variant]
    return (defaults["use_conv_bias"] if use_conv_bias is None else bool(use_conv_bias),
            defaults["bn_epsilon"] if bn_epsilon is None else float(bn_epsilon))


def tsm_resnet_backbone(spec=TABLE_I, num_frames=8, attention="rnl", image_size=224, shift=True,
                        fold_div=8, rnl_kwargs=None, nl_kwargs=None, se_reduction=16,
                        channel_gate_at=(), gate_kwargs=None, resnet_variant="keras",
                        use_conv_bias=None, bn_epsilon=None, bn_momentum=0.9,
                        input_convention="torchvision", dtype=None, name=None):
    """The TSM-ResNet of ``spec``, from clips to per-frame pooled features (no weights loaded).

    Args:
        spec: a :class:`~rnl_keras.models.spec.NetworkSpec` (default Table I's ResNet-50 with its
            5 attention positions and regions; :func:`rnl_keras.models.spec.derive` makes others).
        num_frames: T (fixed in the graph: the shift and the attention need it).
        attention: one of :data:`ATTENTIONS`: the block put at every position the spec marks
            (``"none"``: no block, whatever the marks).
        image_size: square input size, or ``None`` for any H and W.
        shift, fold_div: the TSM temporal shift in every bottleneck (``False``: per-frame TSN).
        rnl_kwargs, nl_kwargs, se_reduction, dtype: see :func:`attention_block`.
        channel_gate_at: positions that get a ChannelGate before their attention block (the
            authors' release: ``(("res3", 0),)``), with ``gate_kwargs``.
        resnet_variant: ``"keras"`` (stride in the first 1x1 conv) or ``"torchvision"`` (in the
            3x3 conv); ``use_conv_bias`` / ``bn_epsilon`` default from it
            (:func:`variant_settings`); ``bn_momentum`` of every backbone BatchNorm.
        input_convention: ``"caffe"`` starts with a fixed :class:`CaffeInputAdapter`.
        name: the model's name (default ``"tsm_resnet_backbone"``).
    Returns:
        a ``keras.Model`` mapping (B, T, H, W, 3) clips to (B, T, C) features, C = 4 x the last
        stage's width; its last layer ``frame_features`` takes the (B*T, C) frame batch.
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if input_convention not in INPUT_CONVENTIONS:
        raise ValueError(f"input_convention must be one of {INPUT_CONVENTIONS}, got "
                         f"{input_convention!r}")
    use_conv_bias, bn_epsilon = variant_settings(resnet_variant, use_conv_bias, bn_epsilon)
    spec = validate(spec)
    gates = set(check_placement(channel_gate_at, spec))
    layout = _Layout(int(num_frames), shift, fold_div, resnet_variant, use_conv_bias, bn_epsilon,
                     bn_momentum)

    def make_block(stage, block_name):
        return attention_block(attention, block_name, stage.region, rnl_kwargs, nl_kwargs,
                               se_reduction, dtype)

    inputs = keras.Input((num_frames, image_size, image_size, 3), name="clip")
    x = CaffeInputAdapter(name="caffe_input")(inputs) if input_convention == "caffe" else inputs
    x = layout.stem(ClipToFrames(name="frames")(x), spec.stem)
    for stage in spec.stages:
        if attention == "none":
            stage = stage._replace(attention=(0,) * stage.blocks)
        x = layout.stage(x, stage, make_block, gates, gate_kwargs)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = FramesToClip(num_frames, name=FEATURES_LAYER)(x)
    return keras.Model(inputs, outputs, name=name or "tsm_resnet_backbone")
