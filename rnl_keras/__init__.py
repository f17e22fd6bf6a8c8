"""rnl-keras: region-based non-local networks (Huang & Bors) for video classification, Keras 3.

Importing the package before TensorFlow turns on TensorFlow's oneDNN CPU kernels
(``TF_ENABLE_ONEDNN_OPTS=1``) unless the environment already says otherwise. TensorFlow enables
them by itself only on CPUs with AVX512-VNNI / AVX512-BF16 / AMX; on AVX2-only CPUs they are off,
although they are much faster there too (measured on a 2-core AVX2 EPYC: 4096^2 matmul 172 vs 91
GFLOP/s, the 7x7 depthwise conv of F_theta 2.8x, TSM-R50 inference 1.5x). Set
``TF_ENABLE_ONEDNN_OPTS=0`` to keep TensorFlow's Eigen kernels. Importing TensorFlow first leaves
TensorFlow's own choice in place.
"""
import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
