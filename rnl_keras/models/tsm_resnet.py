"""TSM-ResNet50 with region-based non-local blocks (paper Table I and Section III-E).

The backbone is a 2D ResNet-50 applied to every frame (clips travel as (B*T, H, W, C) frame
batches), with the temporal shift (TSM, fold_div 8) on the input of conv1 of every bottleneck's
residual branch ("blockres") and the temporal size kept constant. Attention blocks are inserted
after chosen residual blocks; by default the paper's 5: after res3[0], res3[2], res4[0], res4[2],
res4[4] (0-based). Layer names follow ``keras.applications.ResNet50`` (``conv3_block1_1_conv``...;
res3 = Keras' "conv3" stage, res3[0] = ``conv3_block1``), so its weight files load by name.

Per-frame logits (dropout 0.5, then a dense classifier) are averaged over T (TSN consensus).

ImageNet starts (``weights=``) are read by :mod:`rnl_keras.models.pretrained`; a model for
keras.applications (Caffe-convention) weights starts with the fixed
:class:`~rnl_keras.models.input_adapter.CaffeInputAdapter`, so every model takes the same input.
"""
import keras
from keras import layers

from rnl_keras.layers import (ChannelGate, ClipToFrames, FramesToClip, NonLocal, RegionNonLocal,
                              SEChain, SqueezeExcite, TemporalAverage, TemporalShift)
from rnl_keras.models import pretrained
from rnl_keras.models.input_adapter import INPUT_CONVENTIONS, CaffeInputAdapter

ATTENTIONS = ("none", "nl", "se", "gate", "rnl", "se+rnl")
DEFAULT_PLACEMENT = (("res3", 0), ("res3", 2), ("res4", 0), ("res4", 2), ("res4", 4))
DEFAULT_RNL_KERNELS = {"res3": (3, 7, 7), "res4": (3, 3, 3), "res2": (3, 7, 7), "res5": (3, 3, 3)}
STAGE_NAMES = (("res2", "conv2", 1), ("res3", "conv3", 2), ("res4", "conv4", 2), ("res5", "conv5", 2))
RESNET50_BLOCKS = (3, 4, 6, 3)
VARIANTS = ("keras", "torchvision")


def _check_placement(placement, stage_blocks=RESNET50_BLOCKS):
    blocks = {stage: count for (stage, _, _), count in zip(STAGE_NAMES, stage_blocks)}
    out = []
    for item in placement:
        stage, index = item
        if stage not in blocks or not 0 <= int(index) < blocks[stage]:
            raise ValueError(f"placement entry {item!r}: expected (stage, block) with stage in "
                             f"{tuple(blocks)} and 0 <= block < the stage's block count {blocks}")
        out.append((stage, int(index)))
    return tuple(out)


def _attention_block(kind, stage, name, rnl_kernels, rnl_kwargs, nl_kwargs, se_reduction, dtype):
    rnl_kwargs = dict(rnl_kwargs or {})
    rnl_kwargs.setdefault("kernel_size", rnl_kernels.get(stage, DEFAULT_RNL_KERNELS[stage]))
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


class _Builder:
    """Holds the options while the functional graph is laid out."""

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


CLASSIFIER_INITS = ("release", "glorot")


def _classifier(num_classes, dropout, x, init="release"):
    """Dropout then the per-frame classifier ``fc``, bias 0 and a fresh initializer per model
    (unseeded Keras 3 initializers draw their seed from Keras' global seed state).

    ``init="release"``: kernel N(0, 0.001), as the release and TSM (``normal_(weight, 0, std)``
    with std 0.001): a new head on ImageNet features, fine-tuned with SGD.
    ``init="glorot"``: Keras' glorot uniform, for networks trained from scratch with Adam (the CPU
    demo): there the 0.001 head, which scales every backbone gradient by its tiny weights, slowed
    learning far down (demo, 25 epochs: val top-1 0.41 against 0.9 with glorot)."""
    if init not in CLASSIFIER_INITS:
        raise ValueError(f"classifier_init must be one of {CLASSIFIER_INITS}, got {init!r}")
    kernel = (keras.initializers.RandomNormal(0.0, 0.001) if init == "release"
              else keras.initializers.GlorotUniform())
    x = layers.Dropout(dropout, name="dropout")(x)
    return layers.Dense(num_classes, dtype="float32", name="fc", kernel_initializer=kernel,
                        bias_initializer=keras.initializers.Zeros())(x)


def _resolve_start(weights, resnet_variant, include_top, num_classes, use_conv_bias, bn_epsilon,
                   input_convention):
    """(weights path or None, use_conv_bias, bn_epsilon, input_convention), checked against the
    weights file's kind before anything is built."""
    if resnet_variant not in VARIANTS:
        raise ValueError(f"resnet_variant must be one of {VARIANTS}, got {resnet_variant!r}")
    if input_convention is not None and input_convention not in INPUT_CONVENTIONS:
        raise ValueError(f"input_convention must be one of {INPUT_CONVENTIONS} or None, got "
                         f"{input_convention!r}")
    path = None
    if not pretrained.is_random_start(weights):
        path = str(weights)
        if path.strip().lower() == "imagenet":
            path = pretrained.imagenet_weights_path(
                resnet_variant, include_top and int(num_classes) == 1000)
    kind = pretrained.weights_format(path) if path else resnet_variant
    defaults = pretrained.REQUIRED[kind if path else resnet_variant]
    settings = {"resnet_variant": resnet_variant,
                "use_conv_bias": defaults["use_conv_bias"] if use_conv_bias is None
                else bool(use_conv_bias),
                "bn_epsilon": defaults["bn_epsilon"] if bn_epsilon is None else float(bn_epsilon),
                "input_convention": (defaults["input_convention"] if path else "torchvision")
                if input_convention is None else input_convention}
    if path:
        pretrained.check_settings(kind, settings, path)
    return path, settings["use_conv_bias"], settings["bn_epsilon"], settings["input_convention"]


def tsm_resnet50(num_classes, num_frames=8, attention="rnl", image_size=224, shift=True,
                 fold_div=8, placement=DEFAULT_PLACEMENT, rnl_kernel_sizes=None, rnl_kwargs=None,
                 nl_kwargs=None, se_reduction=16, channel_gate_at=(), dropout=0.5,
                 include_top=True, weights=None, resnet_variant="keras", use_conv_bias=None,
                 bn_epsilon=None, bn_momentum=0.9, gate_kwargs=None, dtype=None, name=None,
                 stage_blocks=RESNET50_BLOCKS, base_width=64, input_convention=None,
                 sync_bn=False, trust_pickled_code=False, classifier_init="release"):
    """Build the (RNL) TSM-ResNet50 video classifier as a functional Keras model.

    Args:
        num_classes: classifier outputs K.
        num_frames: T, frames per clip (fixed in the graph: the shift and attention need it).
        attention: ``"none" | "nl" | "se" | "gate" | "rnl" | "se+rnl"``: the block put at every
            ``placement`` position ("se" = original SE r=16, "se+rnl" = SEChain with the additive SE).
        image_size: square input size, or ``None`` for any H and W.
        shift: TSM temporal shift in every bottleneck; ``False`` gives the per-frame TSN backbone.
        placement: (stage, 0-based block) pairs after which attention blocks go.
        rnl_kernel_sizes: {stage: (kt, kh, kw)}; default 3x7x7 in res3 and 3x3x3 in res4.
        rnl_kwargs / nl_kwargs: extra arguments of RegionNonLocal / NonLocal (similarity,
            aggregation, query_chunk_size, key_subsample / subsample, ...).
        se_reduction: reduction of the "se" / "gate" / "se+rnl" blocks.
        channel_gate_at: positions that get a ChannelGate before their attention block (the
            authors' release: ``(("res3", 0),)``).
        include_top: ``False`` returns per-frame pooled features (B, T, 2048).
        weights: the ImageNet start (:mod:`rnl_keras.models.pretrained`): ``None`` / ``"none"``
            (random init); a torchvision ResNet-50 state dict (``.pth`` / ``.pt`` / ``.npz``,
            needs ``resnet_variant="torchvision"``); a keras.applications ResNet-50 ``.h5`` /
            ``.weights.h5``, with or without top (needs ``resnet_variant="keras"``; sets
            ``input_convention="caffe"``); or ``"imagenet"``: download the file of
            ``resnet_variant`` (network needed). With a file holding a classifier of the model's
            shape (ImageNet's with ``num_classes=1000``) ``fc`` is loaded too; attention blocks
            keep their initialisation. A file that does not fit is refused before any change.
        resnet_variant: ``"keras"`` (stride in the first 1x1 conv, matches Keras weights) or
            ``"torchvision"`` (stride in the 3x3 conv, matches TSM / the authors' checkpoints).
        use_conv_bias, bn_epsilon: default (``None``) from the variant: Keras' ResNet50 has conv
            biases and eps 1.001e-5, torchvision's none and 1e-5.
        bn_momentum: of the backbone's BatchNorms; 0.9 is PyTorch's (and TSM's) 0.1. Keras'
            own default 0.99 lags far behind in short fine-tuning runs.
        classifier_init: ``"release"`` (N(0, 0.001), the release's and TSM's) or ``"glorot"``
            (from-scratch training with Adam, e.g. the CPU demo).
        gate_kwargs: extra arguments of the ``channel_gate_at`` gates (e.g. the release's
            ``bn_momentum=0.99``, PyTorch's 0.01).
        stage_blocks, base_width: bottlenecks per stage res2..res5 and the width of res2's
            bottleneck (ResNet-50: (3, 4, 6, 3) and 64). Smaller values give a small TSM-ResNet
            for CPU demos and tests; placements must then fit the smaller stages.
        input_convention: what the backbone's weights expect: ``"torchvision"`` (the input
            itself) or ``"caffe"`` (a fixed :class:`CaffeInputAdapter` turns the input into
            BGR 0-255 minus the Caffe mean). Default: ``"caffe"`` for a keras weights file,
            else ``"torchvision"``. The model's INPUT is the same either way.
        sync_bn: make EVERY BatchNormalization layer ``synchronized=True``, the attention
            blocks' and the gate's too (batch statistics across replicas under a distribution
            strategy), as the release's ``convert_sync_batchnorm``.
        trust_pickled_code: DANGEROUS; passed to the ``.pth`` reader for old checkpoints whose
            pickle holds more than tensors (runs code from the file).
    Returns:
        A ``keras.Model`` mapping float32 (B, T, H, W, 3) RGB clips normalised as
        ``(x/255 - mean)/std`` (:mod:`rnl_keras.imagenet`) to logits (B, num_classes) (float32
        even under a mixed precision policy).
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if include_top and int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    stage_blocks = tuple(int(b) for b in stage_blocks)
    if len(stage_blocks) != 4 or min(stage_blocks) < 1 or int(base_width) < 1:
        raise ValueError(f"stage_blocks must be 4 positive ints and base_width >= 1, got "
                         f"{stage_blocks}, {base_width}")
    path, use_conv_bias, bn_epsilon, input_convention = _resolve_start(
        weights, resnet_variant, include_top, num_classes, use_conv_bias, bn_epsilon,
        input_convention)
    placement = _check_placement(placement, stage_blocks) if attention != "none" else ()
    gates = set(_check_placement(channel_gate_at, stage_blocks))
    rnl_kernels = {**DEFAULT_RNL_KERNELS, **(rnl_kernel_sizes or {})}
    builder = _Builder(int(num_frames), shift, fold_div, resnet_variant, use_conv_bias, bn_epsilon,
                       bn_momentum)

    inputs = keras.Input((num_frames, image_size, image_size, 3), name="clip")
    x = CaffeInputAdapter(name="caffe_input")(inputs) if input_convention == "caffe" else inputs
    x = ClipToFrames(name="frames")(x)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(int(base_width), 7, strides=2, use_bias=use_conv_bias, name="conv1_conv")(x)
    x = builder.bn("conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for level, ((stage, prefix, stride), blocks) in enumerate(zip(STAGE_NAMES, stage_blocks)):
        filters = int(base_width) * 2 ** level
        for index in range(blocks):
            block_name = f"{prefix}_block{index + 1}"
            x = builder.bottleneck(x, filters, stride if index == 0 else 1, index == 0, block_name)
            if (stage, index) in gates:
                gate = ChannelGate(name=f"{block_name}_cg", **(gate_kwargs or {}))
                x = builder.clip_block(x, gate, gate.name)
            if (stage, index) in placement:
                block = _attention_block(attention, stage, block_name, rnl_kernels, rnl_kwargs,
                                         nl_kwargs, se_reduction, dtype)
                x = builder.clip_block(x, block, block.name)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        outputs = TemporalAverage(num_frames, dtype="float32", name="consensus")(
            _classifier(num_classes, dropout, x, classifier_init))
    else:
        outputs = FramesToClip(num_frames, name="frame_features")(x)
    model = keras.Model(inputs, outputs, name=name or f"tsm_resnet50_{attention.replace('+', '_')}")
    if sync_bn:
        _synchronize_batch_norms(model)
    if path is not None:
        pretrained.load_pretrained_weights(model, path, trust_pickled_code=trust_pickled_code)
    return model


def _synchronize_batch_norms(model):
    """``synchronized=True`` on every BatchNormalization, nested ones included (Keras reads it at
    call time, so setting it before the first traced call is enough; it is in get_config)."""
    for layer in model._flatten_layers():
        if isinstance(layer, layers.BatchNormalization):
            layer.synchronized = True


def load_resnet50_weights(model, path, trust_pickled_code=False):
    """Deprecated name of :func:`rnl_keras.models.pretrained.load_pretrained_weights`."""
    return pretrained.load_pretrained_weights(model, path, trust_pickled_code=trust_pickled_code)
