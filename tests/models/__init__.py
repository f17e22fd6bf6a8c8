"""Tests of rnl_keras.models: the Table I spec, the builders, the ImageNet starts."""
