"""The classification head of a TSM-ResNet, and the classifier built on a backbone.

Per frame: dropout 0.5 after the global pooling (paper Section IV), then the dense classifier
``fc``; the per-frame logits are averaged over T (TSN consensus). The head is attached to the
backbone's per-frame pooled batch (B*T, C), the input of its ``frame_features`` layer, so the
classifier is one flat functional model sharing the backbone's layers: its layer names and weight
paths are the backbone's plus ``dropout``, ``fc`` and ``consensus``.
"""
import keras
from keras import layers

from rnl_keras.layers import TemporalAverage
from rnl_keras.models.backbone import FEATURES_LAYER

CLASSIFIER_INITS = ("release", "glorot")


def classifier_head(pooled, num_classes, num_frames, dropout=0.5, init="release"):
    """Dropout, the per-frame classifier ``fc`` and the consensus over T.

    ``fc`` has bias 0 and a fresh initializer per model (unseeded Keras 3 initializers draw
    their seed from Keras' global seed state). ``init="release"``: kernel N(0, 0.001), as the
    release and TSM (``normal_(weight, 0, std)`` with std 0.001): a new head on ImageNet features,
    fine-tuned with SGD. ``init="glorot"``: Keras' glorot uniform, for networks trained from
    scratch with Adam (the CPU demo): there the 0.001 head, which scales every backbone gradient
    by its tiny weights, slowed learning far down (demo, 25 epochs: val top-1 0.41 against 0.9
    with glorot).

    Args:
        pooled: the (B*T, C) per-frame pooled features (a symbolic tensor).
        num_classes: K.
        num_frames: T.
        dropout: the dropout rate.
        init: one of :data:`CLASSIFIER_INITS`.
    Returns:
        the (B, K) float32 logits (float32 even under a mixed precision policy).
    """
    if init not in CLASSIFIER_INITS:
        raise ValueError(f"classifier_init must be one of {CLASSIFIER_INITS}, got {init!r}")
    kernel = (keras.initializers.RandomNormal(0.0, 0.001) if init == "release"
              else keras.initializers.GlorotUniform())
    x = layers.Dropout(dropout, name="dropout")(pooled)
    x = layers.Dense(num_classes, dtype="float32", name="fc", kernel_initializer=kernel,
                     bias_initializer=keras.initializers.Zeros())(x)
    return TemporalAverage(num_frames, dtype="float32", name="consensus")(x)


def tsm_resnet_classifier(backbone, num_classes, dropout=0.5, classifier_init="release",
                          name=None):
    """The video classifier on ``backbone`` (built by
    :func:`~rnl_keras.models.backbone.tsm_resnet_backbone`).

    Args:
        backbone: the backbone model; its layers (and weights) are shared, not copied.
        num_classes: K (>= 1).
        dropout, classifier_init: see :func:`classifier_head`.
        name: the model's name (default the backbone's name with ``_classifier``).
    Returns:
        a flat ``keras.Model`` from the backbone's clip input to (B, K) float32 logits.
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    try:
        features = backbone.get_layer(FEATURES_LAYER)
    except ValueError:
        raise ValueError(f"backbone {backbone.name!r} has no {FEATURES_LAYER!r} layer: build it "
                         "with rnl_keras.models.tsm_resnet_backbone") from None
    logits = classifier_head(features.input, int(num_classes), features.num_frames, dropout,
                             classifier_init)
    return keras.Model(backbone.input, logits, name=name or f"{backbone.name}_classifier")
