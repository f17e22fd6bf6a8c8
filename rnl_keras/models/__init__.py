"""Video classification models built from rnl_keras layers."""
from rnl_keras.models.tsm_resnet import ATTENTIONS, DEFAULT_PLACEMENT, load_resnet50_weights, tsm_resnet50

__all__ = ["tsm_resnet50", "load_resnet50_weights", "ATTENTIONS", "DEFAULT_PLACEMENT"]
