"""The attention of the RNL and NL blocks, y_i = sum_j w_ij v_j (paper eqs. (4)-(9)).

Read in this order:

* ``reference``: the equations in plain ``keras.ops``, the whole weight matrix at once. The oracle
  every fast path is tested against (tests/layers/attention/), and the place to start.
* ``kernels``: the blocked forward kernels (dot product in O(N d^2); rows / row chunks; the
  symmetric path that builds half of S = P P^T with a streaming softmax). Each returns y and the
  Gaussian log-sum-exp L the backward needs.
* ``recompute``: the memory-bounded backward of the blocked kernels (FlashAttention-style: the
  score blocks are recomputed, not kept). Imports ``kernels``; nothing here imports it back.
* ``dispatch``: ``attend``, and ``choose_path``, the one function that decides the kernel from
  static facts only (so every traced or exported graph holds one path and no runtime ``cond``).
* ``blocks``: the row-block bookkeeping both directions share.

No fixed-offset fast path (issue 12). Until then a symmetric Gaussian float32 batch took
exp(S_ab - h_a - h_b^T), h_i = |p_i|^2 / 2, one exp per block pair (-12% attention time at res3),
but it was exact only while h spanned at most 60 within every clip of the batch, checked by a
runtime ``cond``. Spread = max_i h_i - min_i h_i within a clip at the input of each RNL block
(``bench/feature_spread.py``; the demo recipe, configs/demo.flags, trained here from the
release-faithful initialisation; 32 validation clips of its synthetic data):

    model                           block  spread min / median / max  clips <= 60  batches of 8
    freshly built                   res3   0.0029 / 0.0033 / 0.0037   100%         100%
                                    res4   0.0022 / 0.0024 / 0.0027   100%         100%
    1 epoch (of a 6-epoch run)      res3   1.8 / 11 / 59              100%         100%
                                    res4   2.0 / 11 / 63              97%          75%
    6 epochs (train top-1 0.27)     res3   2.1 / 138 / 620            12%          0%
                                    res4   133 / 340 / 1090           0%           0%
    25 epochs, the demo recipe      res3   8.0e3 / 9.4e4 / 7.2e5      0%           0%
      (val top-1 0.41)              res4   1.1e3 / 2.6e4 / 9.7e4      0%           0%

(The 25-epoch best checkpoint: res3 7.9e4, res4 2.4e4 median, 0% within 60. A released-layout
state dict of random weights at the release's scales, tests/checkpoints/released_layout.py, gives
10-17 on N(0, 1) clips: untrained, it says nothing about trained weights; no trained released
checkpoint is available here.) The spread grows with training by seven orders of magnitude and
leaves the bound within the first epochs: trained models never take the path. It served only
freshly initialised models and benchmarks of them, at the price of a ``cond`` (an IF op in
TFLite) in every export, a flag, a config field and a doubled test matrix. It was removed;
``RegionNonLocal(fixed_offsets=...)`` is still accepted (deprecated, ignored) so that older configs
and ``.keras`` files load. Benchmarks report trained-like rows (``bench/trained_like.py``).
"""
from rnl_keras.layers.attention.dispatch import attend, choose_path
from rnl_keras.layers.attention.reference import (SIMILARITIES, attention_weights, l2_normalize,
                                                  query_rows_weights)

__all__ = ["attend", "choose_path", "SIMILARITIES", "attention_weights", "l2_normalize",
           "query_rows_weights"]
