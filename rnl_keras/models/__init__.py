"""Video classification models built from rnl_keras layers, and their ImageNet starts.

``spec`` holds the architecture as data (the paper's Table I, :data:`TABLE_I`); ``backbone`` and
``classifier`` build a TSM-ResNet's two parts; the module ``tsm_resnet`` the whole network
(``rnl_keras.models.tsm_resnet.tsm_resnet(num_classes, spec=...)``, not re-exported here so that
the name keeps meaning the module) and its Table I preset ``tsm_resnet50``; ``pretrained`` reads
the ImageNet starts.
"""
from rnl_keras.models.backbone import tsm_resnet_backbone
from rnl_keras.models.classifier import classifier_head, tsm_resnet_classifier
from rnl_keras.models.input_adapter import (CAFFE_BGR_MEAN, INPUT_CONVENTIONS, CaffeInputAdapter,
                                            input_convention_of)
from rnl_keras.models.pretrained import (PretrainedWeightsError, load_pretrained_weights,
                                         weights_format, weights_record)
from rnl_keras.models.spec import TABLE_I, NetworkSpec, Stage, Stem, architecture_name
from rnl_keras.models.tsm_resnet import (ATTENTIONS, DEFAULT_PLACEMENT, load_resnet50_weights,
                                         tsm_resnet50)

__all__ = ["tsm_resnet50", "tsm_resnet_backbone", "tsm_resnet_classifier",
           "classifier_head", "TABLE_I", "NetworkSpec", "Stage", "Stem", "architecture_name",
           "load_pretrained_weights", "load_resnet50_weights", "weights_record",
           "weights_format", "PretrainedWeightsError", "CaffeInputAdapter", "input_convention_of",
           "INPUT_CONVENTIONS", "CAFFE_BGR_MEAN", "ATTENTIONS", "DEFAULT_PLACEMENT"]
