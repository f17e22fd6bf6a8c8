"""rnl-keras: region-based non-local networks (Huang & Bors) for video classification, Keras 3."""
__version__ = "0.1.0"
