"""The (RNL) TSM-ResNet video classifier: ``tsm_resnet(spec=...)`` and its Table I preset.

:func:`tsm_resnet` builds the classifier of any :class:`~rnl_keras.models.spec.NetworkSpec`:
the backbone (:mod:`rnl_keras.models.backbone`), the head on it
(:mod:`rnl_keras.models.classifier`), an ImageNet start (:mod:`rnl_keras.models.pretrained`;
a model for keras.applications (Caffe-convention) weights starts with the fixed
:class:`~rnl_keras.models.input_adapter.CaffeInputAdapter`, so every model takes the same input).
:func:`tsm_resnet50` is the paper's network (Table I, :data:`~rnl_keras.models.spec.TABLE_I`),
whose depths, widths, attention positions and regions its arguments can still change.
"""
from keras import layers

from rnl_keras.models import pretrained, spec as specs
from rnl_keras.models.backbone import (ATTENTIONS, VARIANTS, attention_block,  # noqa: F401
                                       tsm_resnet_backbone, variant_settings)
from rnl_keras.models.classifier import CLASSIFIER_INITS, tsm_resnet_classifier  # noqa: F401
from rnl_keras.models.input_adapter import INPUT_CONVENTIONS
from rnl_keras.models.spec import TABLE_I

# Table I's columns, under the names the rest of the package has always imported.
DEFAULT_PLACEMENT = specs.placement_of(TABLE_I)
DEFAULT_RNL_KERNELS = specs.regions_of(TABLE_I)
STAGE_NAMES = specs.stage_names_of(TABLE_I)
RESNET50_BLOCKS = specs.blocks_of(TABLE_I)


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
    use_conv_bias, bn_epsilon = variant_settings(kind, use_conv_bias, bn_epsilon)
    if input_convention is None:
        input_convention = pretrained.REQUIRED[kind]["input_convention"] if path else "torchvision"
    settings = {"resnet_variant": resnet_variant, "use_conv_bias": use_conv_bias,
                "bn_epsilon": bn_epsilon, "input_convention": input_convention}
    if path:
        pretrained.check_settings(kind, settings, path)
    return path, settings["use_conv_bias"], settings["bn_epsilon"], settings["input_convention"]


def tsm_resnet(num_classes, spec=TABLE_I, num_frames=8, attention="rnl", include_top=True,
               dropout=0.5, classifier_init="release", weights=None, resnet_variant="keras",
               use_conv_bias=None, bn_epsilon=None, input_convention=None, sync_bn=False,
               trust_pickled_code=False, name=None, **backbone_options):
    """The video classifier (or, ``include_top=False``, the backbone) of ``spec``.

    Args:
        num_classes: classifier outputs K.
        spec: the :class:`~rnl_keras.models.spec.NetworkSpec` (stages, widths, strides, where
            the attention blocks go and their regions); default Table I.
        num_frames, attention: T and the attention kind (:func:`tsm_resnet_backbone`).
        include_top: ``False`` returns the backbone: per-frame pooled features (B, T, C).
        dropout, classifier_init: of the head
            (:func:`~rnl_keras.models.classifier.classifier_head`).
        weights: the ImageNet start: ``None`` / ``"none"`` (random init); a torchvision ResNet-50
            state dict (``.pth`` / ``.pt`` / ``.npz``, needs ``resnet_variant="torchvision"``); a
            keras.applications ResNet-50 ``.h5`` / ``.weights.h5`` (needs ``"keras"``; sets
            ``input_convention="caffe"``); or ``"imagenet"``: download the file of
            ``resnet_variant`` (network needed). ``fc`` is loaded too from a file holding a
            classifier of its shape; attention blocks keep their initialisation. A file that
            does not fit is refused before any change.
        resnet_variant: ``"keras"`` (stride in the first 1x1 conv, matches Keras weights) or
            ``"torchvision"`` (stride in the 3x3 conv, matches TSM / the authors' checkpoints).
        use_conv_bias, bn_epsilon, input_convention: default (``None``) from the weights file,
            else from the variant (Keras': conv biases, eps 1.001e-5; torchvision's: none, 1e-5;
            input ``"torchvision"``). ``"caffe"`` starts with a fixed :class:`CaffeInputAdapter`;
            the model's INPUT is the same either way.
        sync_bn: make EVERY BatchNormalization ``synchronized=True`` (blocks and gates too), as
            the release's ``convert_sync_batchnorm``.
        trust_pickled_code: DANGEROUS; passed to the ``.pth`` reader (runs code from the file).
        name: the model's name (default ``tsm_resnet_<attention>``).
        **backbone_options: ``image_size``, ``shift``, ``fold_div``, ``rnl_kwargs``,
            ``nl_kwargs``, ``se_reduction``, ``channel_gate_at``, ``gate_kwargs``,
            ``bn_momentum``, ``dtype`` of :func:`~rnl_keras.models.backbone.tsm_resnet_backbone`.
    Returns:
        A ``keras.Model`` mapping float32 (B, T, H, W, 3) RGB clips normalised as
        ``(x/255 - mean)/std`` (:mod:`rnl_keras.imagenet`) to float32 logits (B, num_classes).
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    if include_top and int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    path, use_conv_bias, bn_epsilon, input_convention = _resolve_start(
        weights, resnet_variant, include_top, num_classes, use_conv_bias, bn_epsilon,
        input_convention)
    name = name or f"tsm_resnet_{attention.replace('+', '_')}"
    backbone = tsm_resnet_backbone(
        spec, num_frames, attention, resnet_variant=resnet_variant,
        use_conv_bias=use_conv_bias, bn_epsilon=bn_epsilon, input_convention=input_convention,
        name=name if not include_top else f"{name}_backbone", **backbone_options)
    model = (tsm_resnet_classifier(backbone, num_classes, dropout, classifier_init, name=name)
             if include_top else backbone)
    if sync_bn:
        _synchronize_batch_norms(model)
    if path is not None:
        pretrained.load_pretrained_weights(model, path, trust_pickled_code=trust_pickled_code)
    return model


def tsm_resnet50(num_classes, num_frames=8, attention="rnl", image_size=224, shift=True,
                 fold_div=8, placement=DEFAULT_PLACEMENT, rnl_kernel_sizes=None, rnl_kwargs=None,
                 nl_kwargs=None, se_reduction=16, channel_gate_at=(), dropout=0.5,
                 include_top=True, weights=None, resnet_variant="keras", use_conv_bias=None,
                 bn_epsilon=None, bn_momentum=0.9, gate_kwargs=None, dtype=None, name=None,
                 stage_blocks=RESNET50_BLOCKS, base_width=64, input_convention=None,
                 sync_bn=False, trust_pickled_code=False, classifier_init="release"):
    """The (RNL) TSM-ResNet50 of Table I: :func:`tsm_resnet` with ``spec=TABLE_I``.

    Args:
        placement: (stage, 0-based block) pairs after which attention blocks go (default the
            paper's 5: res3[0], res3[2], res4[0], res4[2], res4[4]; ignored for ``"none"``).
        rnl_kernel_sizes: {stage: (kt, kh, kw)} regions; default 3x7x7 in res3, 3x3x3 in res4.
        stage_blocks, base_width: bottlenecks per stage res2..res5 and the width of conv1 and
            res2's bottleneck (doubling per stage). Smaller values give a small TSM-ResNet (CPU
            demos and tests; :func:`~rnl_keras.models.spec.architecture_name` names it);
            placements must then fit the smaller stages.
        attention: ``"none" | "nl" | "se" | "gate" | "rnl" | "se+rnl"`` ("se" = original SE
            r=16, "se+rnl" = SEChain with the additive SE).
        image_size: square input size, or ``None`` for any H and W.
        shift, fold_div: TSM temporal shift in every bottleneck; ``False``: the per-frame TSN.
        rnl_kwargs / nl_kwargs: extra arguments of RegionNonLocal / NonLocal (similarity,
            aggregation, query_chunk_size, key_subsample / subsample, ...).
        se_reduction: reduction of the "se" / "gate" / "se+rnl" blocks.
        channel_gate_at, gate_kwargs: positions that get a ChannelGate before their attention
            block (the release: ``(("res3", 0),)``) and its arguments (e.g. ``bn_momentum``).
        bn_momentum: of the backbone's BatchNorms; 0.9 is PyTorch's (and TSM's) 0.1.
        include_top: ``False`` returns per-frame pooled features (B, T, C), C = 4 x the last
            stage's width (2048 for Table I).
        num_classes, num_frames, dropout, weights, resnet_variant, use_conv_bias, bn_epsilon,
        input_convention, sync_bn, trust_pickled_code, classifier_init, dtype: see
            :func:`tsm_resnet`.
        name: the model's name (default ``tsm_resnet50_<attention>`` for Table I's depths and
            widths, ``tsm_resnet_<attention>`` for a smaller network).
    Returns:
        the ``keras.Model`` of :func:`tsm_resnet`.
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if include_top and int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    spec = specs.derive(TABLE_I, blocks=stage_blocks, base_width=base_width,
                        positions=placement if attention != "none" else (),
                        region_sizes=rnl_kernel_sizes)
    return tsm_resnet(
        num_classes, spec, num_frames=num_frames, attention=attention, include_top=include_top,
        dropout=dropout, classifier_init=classifier_init, weights=weights,
        resnet_variant=resnet_variant, use_conv_bias=use_conv_bias, bn_epsilon=bn_epsilon,
        input_convention=input_convention, sync_bn=sync_bn,
        trust_pickled_code=trust_pickled_code,
        name=name or _default_name(spec, attention), image_size=image_size,
        shift=shift, fold_div=fold_div, rnl_kwargs=rnl_kwargs, nl_kwargs=nl_kwargs,
        se_reduction=se_reduction, channel_gate_at=channel_gate_at, gate_kwargs=gate_kwargs,
        bn_momentum=bn_momentum, dtype=dtype)


def _default_name(spec, attention):
    """``tsm_resnet50_<attention>`` for Table I's layout; a smaller network is not named a
    ResNet50 (``tsm_resnet_<attention>``)."""
    family = "tsm_resnet50" if specs.is_resnet50(spec) else "tsm_resnet"
    return f"{family}_{attention.replace('+', '_')}"


def _synchronize_batch_norms(model):
    """``synchronized=True`` on every BatchNormalization, nested ones included (Keras reads it at
    call time, so setting it before the first traced call is enough; it is in get_config)."""
    for layer in model._flatten_layers():
        if isinstance(layer, layers.BatchNormalization):
            layer.synchronized = True


def load_resnet50_weights(model, path, trust_pickled_code=False):
    """Deprecated name of :func:`rnl_keras.models.pretrained.load_pretrained_weights`."""
    return pretrained.load_pretrained_weights(model, path, trust_pickled_code=trust_pickled_code)
