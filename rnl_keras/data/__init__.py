"""Video input: list files, decoding, TSN/TSM sampling, clip-consistent augmentation, shards."""
