"""Attention-map figures of RNL / NL blocks (paper Figures 1, 4, 5), drawn with Pillow."""
from rnl_keras.visualization.attention_maps import (AttentionMaps, Point, attention_blocks,
                                                    block_input_model, compute_attention_maps,
                                                    figure_size, get_attention_block, grid_points,
                                                    jet, load_clip, normalise_frames,
                                                    normalise_rows, parse_points,
                                                    render_attention_figure, resize_and_crop,
                                                    sample_indices)

__all__ = ["AttentionMaps", "Point", "attention_blocks", "block_input_model",
           "compute_attention_maps", "figure_size", "get_attention_block", "grid_points", "jet",
           "load_clip", "normalise_frames", "normalise_rows", "parse_points",
           "render_attention_figure", "resize_and_crop", "sample_indices"]
