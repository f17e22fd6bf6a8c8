"""Cost accounting of rnl-keras models: parameters and multiply-adds, paper convention and true."""
from rnl_keras.profiling.macs import (TABLE_III, count_macs, count_params, layer_macs,
                                      profile_models)

__all__ = ["count_macs", "count_params", "layer_macs", "profile_models", "TABLE_III"]
