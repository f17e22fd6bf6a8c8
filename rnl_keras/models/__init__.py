"""Video classification models built from rnl_keras layers, and their ImageNet starts."""
from rnl_keras.models.input_adapter import (CAFFE_BGR_MEAN, INPUT_CONVENTIONS, CaffeInputAdapter,
                                            input_convention_of)
from rnl_keras.models.pretrained import (PretrainedWeightsError, load_pretrained_weights,
                                         weights_format, weights_record)
from rnl_keras.models.tsm_resnet import (ATTENTIONS, DEFAULT_PLACEMENT, load_resnet50_weights,
                                         tsm_resnet50)

__all__ = ["tsm_resnet50", "load_pretrained_weights", "load_resnet50_weights", "weights_record",
           "weights_format", "PretrainedWeightsError", "CaffeInputAdapter", "input_convention_of",
           "INPUT_CONVENTIONS", "CAFFE_BGR_MEAN", "ATTENTIONS", "DEFAULT_PLACEMENT"]
