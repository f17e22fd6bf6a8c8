"""Attention maps of RNL / NL blocks for chosen reference positions (paper Figures 1, 4 and 5).

For a reference position i (a frame t and a pixel (x, y) of the model's input image) the map is
the row w_i. of the block's attention over all key positions j of the clip, shown on every frame.

Only the chosen rows are computed: a sub-model runs the network from its input to the block's
INPUT tensor (the block sits on a ``FramesToClip`` output, found through the functional graph as
``layer.input``), then ``layer.attention_weights(block_input, positions)`` builds Q x N_k
weights, never the N x N matrix of any block.

Image coordinates map to the block's feature grid by the block's stride (input size / feature
size: 8 in res3, 16 in res4): row = y // stride, column = x // stride. With key sub-sampling
(``key_subsample`` / ``subsample``) the keys lie on a (T, H // 2, W // 2) grid; maps are reshaped to
whichever key grid the weights have.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np



@dataclass(frozen=True)
class Point:
    """A reference position: frame index t and pixel (x, y) in the model's input image."""
    frame: int
    x: int
    y: int

    def __str__(self):
        return f"{self.frame}:{self.x},{self.y}"


@dataclass
class AttentionMaps:
    block: str
    maps: np.ndarray            # (P, T, hk, wk) float32 attention weights of each point's row
    points: tuple               # the Points
    positions: np.ndarray       # (P,) flattened (t, h, w) query indices into the feature grid
    feature_grid: tuple         # (T, H, W) of the block input
    key_grid: tuple             # (T, hk, wk)
    stride: tuple               # (sy, sx) image pixels per feature cell


# --------------------------------------------------------------------------- points
def parse_points(text: str) -> list[Point]:
    """``"3:112,80;3:20,200"`` -> [Point(3, 112, 80), Point(3, 20, 200)]."""
    points = []
    for item in (s.strip() for s in str(text).split(";")):
        if not item:
            continue
        try:
            frame, xy = item.split(":")
            x, y = xy.split(",")
            points.append(Point(int(frame), int(x), int(y)))
        except ValueError:
            raise ValueError(f"bad reference point {item!r}: expected FRAME:X,Y "
                             "(e.g. 3:112,80; points separated by ';')") from None
    if not points:
        raise ValueError(f"no reference points in {text!r}")
    return points


def grid_points(spec: str, frame: int, height: int, width: int) -> list[Point]:
    """``"3x3"``: the centres of a rows x cols grid of cells over the frame, row by row."""
    try:
        rows, cols = (int(v) for v in str(spec).lower().split("x"))
    except ValueError:
        raise ValueError(f"bad grid {spec!r}: expected ROWSxCOLS, e.g. 3x3") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"bad grid {spec!r}: rows and columns must be >= 1")
    return [Point(int(frame), int((c + 0.5) * width / cols), int((r + 0.5) * height / rows))
            for r in range(rows) for c in range(cols)]


# --------------------------------------------------------------------------- blocks
def _attention_layer(layer):
    """The layer whose ``attention_weights`` to use, and a function preparing its input."""
    from rnl_keras.layers import SEChain

    if isinstance(layer, SEChain):
        return layer.rnl, lambda x: layer.channel(x, training=False)
    if hasattr(layer, "attention_weights"):
        return layer, lambda x: x
    return None, None


def attention_blocks(model) -> list[str]:
    """Names of the model's layers that have attention maps (RNL, NL, SE+RNL chains), in order."""
    return [layer.name for layer in model.layers if _attention_layer(layer)[0] is not None]


def get_attention_block(model, name=None):
    blocks = attention_blocks(model)
    if not blocks:
        raise ValueError(f"model {model.name!r} has no attention block with attention maps "
                         "(RegionNonLocal / NonLocal)")
    if name is None:
        return model.get_layer(blocks[0])
    if name not in blocks:
        raise ValueError(f"block {name!r} is not an attention block of {model.name!r}; "
                         f"choose one of {blocks}")
    return model.get_layer(name)


def block_input_model(model, block):
    """A keras.Model from the model's input to ``block``'s input tensor (B, T, H, W, C)."""
    import keras

    layer = model.get_layer(block) if isinstance(block, str) else block
    return keras.Model(model.inputs, layer.input, name=f"{layer.name}_input")


def _key_grid(num_keys, t, h, w):
    for grid in ((t, h, w), (t, h // 2, w // 2)):
        if int(np.prod(grid)) == num_keys:
            return grid
    raise ValueError(f"{num_keys} keys fit neither the ({t}, {h}, {w}) feature grid nor its "
                     "1x2x2 sub-sampled one")


def compute_attention_maps(model, clip, points, block=None) -> AttentionMaps:
    """Attention rows of ``block`` (default: the first attention block) for ``points``.

    Args:
        model: a tsm_resnet50-style functional model.
        clip: float32 (T, H, W, 3) or (1, T, H, W, 3), the model's (normalised) input.
        points: Points in the input image's pixel coordinates.
    Returns:
        AttentionMaps with ``maps`` (P, T, hk, wk).
    """
    from keras import ops

    clip = np.asarray(clip, np.float32)
    if clip.ndim == 4:
        clip = clip[None]
    if clip.ndim != 5 or clip.shape[0] != 1:
        raise ValueError(f"clip must be (T, H, W, 3) or (1, T, H, W, 3), got {clip.shape}")
    _, num_frames, height, width, _ = clip.shape
    layer = get_attention_block(model, block)
    attention, prepare = _attention_layer(layer)
    features = block_input_model(model, layer)([clip], training=False)
    t, h, w = (int(v) for v in features.shape[1:4])
    if t != num_frames:
        raise ValueError(f"block {layer.name} sees {t} frames, the clip has {num_frames}")
    sy, sx = height / h, width / w
    positions = []
    for p in points:
        if not (0 <= p.frame < t and 0 <= p.x < width and 0 <= p.y < height):
            raise ValueError(f"reference point {p} outside the clip: frames 0..{t - 1}, "
                             f"x 0..{width - 1}, y 0..{height - 1}")
        positions.append(p.frame * h * w + int(p.y // sy) * w + int(p.x // sx))
    positions = np.asarray(positions, np.int32)
    weights = attention.attention_weights(prepare(features), positions)   # (1, P, N_k)
    weights = np.asarray(ops.convert_to_numpy(weights), np.float32)[0]
    key_grid = _key_grid(weights.shape[-1], t, h, w)
    return AttentionMaps(block=layer.name, maps=weights.reshape((len(points),) + key_grid),
                         points=tuple(points), positions=positions, feature_grid=(t, h, w),
                         key_grid=key_grid, stride=(sy, sx))


# --------------------------------------------------------------------------- drawing
def jet(values) -> np.ndarray:
    """Jet-like colormap: values in [0, 1] -> uint8 RGB (dark blue, blue, cyan, yellow, red,
    dark red), shape values.shape + (3,)."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return np.round(np.stack([r, g, b], axis=-1) * 255.0).astype(np.uint8)


def normalise_rows(maps) -> np.ndarray:
    """Scale each point's maps (over all its frames together) to [0, 1]."""
    maps = np.asarray(maps, np.float32)
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(axis=1, keepdims=True)
    span = np.maximum(flat.max(axis=1, keepdims=True) - low, 1e-12)
    return ((flat - low) / span).reshape(maps.shape)


def figure_size(num_rows, num_frames, tile_height, tile_width, panels=1, gap=4, panel_gap=16):
    """(width, height) of :func:`render_attention_figure`'s image: tiles with ``gap`` pixels
    between and around them, panels side by side ``panel_gap`` apart."""
    panel_width = num_frames * tile_width + (num_frames + 1) * gap
    width = panels * panel_width + (panels - 1) * panel_gap
    height = num_rows * tile_height + (num_rows + 1) * gap
    return width, height


def _mark(draw, x, y, radius):
    draw.line([(x - 2 * radius, y), (x + 2 * radius, y)], fill=(255, 255, 255), width=3)
    draw.line([(x, y - 2 * radius), (x, y + 2 * radius)], fill=(255, 255, 255), width=3)
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 0, 0),
                 outline=(255, 255, 255))
    draw.line([(x - 2 * radius + 1, y), (x + 2 * radius - 1, y)], fill=(255, 0, 0), width=1)
    draw.line([(x, y - 2 * radius + 1), (x, y + 2 * radius - 1)], fill=(255, 0, 0), width=1)


def render_attention_figure(frames, panels, points, alpha=0.5, gap=4, panel_gap=16):
    """Heat-maps blended on the frames: one row per reference point, one column per frame.

    Args:
        frames: uint8 (T, H, W, 3), the frames the model saw (after resizing / cropping).
        panels: a list of (P, T, hk, wk) maps (e.g. RNL and NL) drawn side by side.
        points: the P reference Points; each is marked (red dot, cross) on its own frame.
    Returns:
        A PIL RGB image of size :func:`figure_size`.
    """
    from PIL import Image, ImageDraw

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    num_frames, height, width, _ = frames.shape
    if isinstance(panels, np.ndarray):
        panels = [panels]
    for maps in panels:
        if maps.shape[:2] != (len(points), num_frames):
            raise ValueError(f"maps {maps.shape} do not fit {len(points)} points x "
                             f"{num_frames} frames")
    size = figure_size(len(points), num_frames, height, width, len(panels), gap, panel_gap)
    canvas = Image.new("RGB", size, (255, 255, 255))
    radius = max(2, min(height, width) // 40)
    for k, maps in enumerate(normalise_rows(m) for m in panels):
        left = k * (num_frames * width + (num_frames + 1) * gap + panel_gap)
        for r, point in enumerate(points):
            for t in range(num_frames):
                heat = Image.fromarray(np.ascontiguousarray(maps[r, t], np.float32))  # mode "F"
                heat = np.asarray(heat.resize((width, height), Image.BILINEAR))
                tile = (1.0 - alpha) * frames[t].astype(np.float32) + alpha * jet(heat)
                tile = Image.fromarray(np.clip(np.round(tile), 0, 255).astype(np.uint8))
                if t == point.frame:
                    _mark(ImageDraw.Draw(tile), point.x, point.y, radius)
                canvas.paste(tile, (left + gap + t * (width + gap), gap + r * (height + gap)))
    return canvas


# --------------------------------------------------------------------------- clips
def sample_indices(num_video_frames, num_frames):
    """TSN test sampling: the centre frame of each of ``num_frames`` equal segments (the
    evaluation's ``rnl_keras.data.sampling.tsn_eval_indices`` with one clip)."""
    from rnl_keras.export.preprocess import tsn_center_indices

    return tsn_center_indices(max(int(num_video_frames), 1), int(num_frames))


def resize_and_crop(frames, size, resize_shorter=None):
    """The test transform's resize and centre crop: uint8 (T, H, W, 3) -> float32 (T, S, S, 3).

    ``rnl_keras.data.eval_transform.resize_and_crop`` with one crop: the shorter side resized to
    ``resize_shorter`` (default ``size * 256 // 224``, as everywhere), the centre S x S crop, pixel
    values on [0, 255] (not rounded: :func:`normalise_frames` of them is the model's input).
    """
    from rnl_keras.data.eval_transform import default_resize_shorter
    from rnl_keras.data.eval_transform import resize_and_crop as transform

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got {frames.shape}")
    r = int(resize_shorter or default_resize_shorter(size))
    return np.asarray(transform(frames[None], int(size), r, crops=1))[0]


def normalise_frames(frames):
    """[0, 255] RGB -> float32 ImageNet mean/std normalised (the model's input convention)."""
    from rnl_keras.data.eval_transform import normalize

    return np.asarray(normalize(np.asarray(frames, np.float32)), np.float32)


def load_clip(path, num_frames, image_size, resize_shorter=None):
    """The clip as the evaluation sees it: full-size decode, TSN segment centres, test transform.

    Returns uint8 frames (T, S, S, 3) to draw on (the crop, rounded), the float32 normalised clip
    (the model's input, from the unrounded crop, equal to the evaluation's and the serving graph's
    1-crop view) and the frame indices.
    """
    from rnl_keras.data.video import probe_num_frames
    from rnl_keras.export.predictor import read_clip

    path = str(path)
    indices = sample_indices(probe_num_frames(path), num_frames)
    crop = resize_and_crop(read_clip(path, num_frames), image_size, resize_shorter)
    frames = np.clip(np.round(crop), 0, 255).astype(np.uint8)
    return frames, normalise_frames(crop), np.asarray(indices)
