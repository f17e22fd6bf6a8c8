"""Synthetic action videos written as real h264 mp4 files: moving shapes on textured backgrounds.

The class is defined only by motion over time: an asymmetric shape moves left / right / up / down,
grows / shrinks, or rotates clockwise / counter-clockwise. Start position, size, angle, colours and
background texture are drawn independently of the class, and each class has a time-reversed twin,
so neither a single frame nor an unordered set of frames tells the class. Clips are seeded
(``seed`` plus the split and clip number), so any clip can be regenerated alone.

Encoding uses PyAV with ``libx264`` / ``yuv420p`` (``mpeg4`` only when libx264 is unavailable).
"""
from __future__ import annotations

import os

import av
import numpy as np

CLASSES = ("move_left", "move_right", "move_up", "move_down", "grow", "shrink",
           "rotate_clockwise", "rotate_counterclockwise")

# An asymmetric arrow-like polygon (unit size, centred): no rotational or mirror symmetry.
_SHAPE = np.array([[-1.0, -0.45], [0.35, -0.45], [0.35, -0.9], [1.0, 0.0], [0.1, 0.75],
                   [0.1, 0.35], [-1.0, 0.35]], np.float32)


def pick_codec() -> str:
    """``"libx264"`` when PyAV can encode with it, else ``"mpeg4"``."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001
        return "mpeg4"


def _inside(poly: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test on a pixel grid."""
    inside = np.zeros(xs.shape, bool)
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for a, b, c, d in zip(x0, y0, x1, y1):
        cond = (b > ys) != (d > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = a + (ys - b) * (c - a) / (d - b)
        inside ^= cond & (xs < xc)
    return inside


def _texture(rng, h, w) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, np.pi)
    freq = rng.uniform(0.15, 0.6)
    stripes = 0.5 + 0.5 * np.sin(freq * (np.cos(ang) * xx + np.sin(ang) * yy) + rng.uniform(0, 6.3))
    noise = rng.uniform(-25, 25, (h, w, 1))
    img = c0 * (1 - stripes[..., None]) + c1 * stripes[..., None] + noise
    return np.clip(img, 0, 255).astype(np.float32)


def render_clip(label: int, num_frames: int, size: tuple[int, int], rng) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 of one clip of class ``label``."""
    h, w = size
    m = min(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    bg = _texture(rng, h, w)
    bg = bg * 0.6 + 40   # keep the background mid-contrast so the shape stands out
    colour = rng.uniform(0, 255, 3)
    colour = np.where(np.abs(colour - bg.mean((0, 1))) < 60, 255 - colour, colour)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    radius = rng.uniform(0.18, 0.25) * m
    angle = rng.uniform(0, 2 * np.pi)
    steps = np.arange(num_frames, dtype=np.float32) / max(num_frames - 1, 1)   # 0 .. 1
    travel = rng.uniform(0.55, 0.75) * m
    factor = rng.uniform(1.9, 2.4)
    turn = np.deg2rad(rng.uniform(15, 20)) * (num_frames - 1)
    name = CLASSES[label]
    x, y = np.full(num_frames, cx), np.full(num_frames, cy)
    r, a = np.full(num_frames, radius), np.full(num_frames, angle)
    if name == "move_left":
        x = cx + travel * (0.5 - steps)
    elif name == "move_right":
        x = cx - travel * (0.5 - steps)
    elif name == "move_up":
        y = cy + travel * (0.5 - steps)
    elif name == "move_down":
        y = cy - travel * (0.5 - steps)
    elif name == "grow":
        r = radius * factor ** (steps - 0.5)
    elif name == "shrink":
        r = radius * factor ** (0.5 - steps)
    elif name == "rotate_clockwise":       # image y points down: +angle turns clockwise on screen
        a = angle + turn * steps
    elif name == "rotate_counterclockwise":
        a = angle - turn * steps
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    for t in range(num_frames):
        c, s = np.cos(a[t]), np.sin(a[t])
        poly = _SHAPE @ np.array([[c, s], [-s, c]], np.float32) * r[t] + [x[t], y[t]]
        mask = _inside(poly, xx, yy)[..., None]
        frames[t] = np.where(mask, colour, bg).astype(np.uint8)
    return frames


def write_video(path: str, frames: np.ndarray, fps: int = 25, codec: str | None = None) -> None:
    """Encode ``(T, H, W, 3)`` uint8 frames (even H, W) to ``path``."""
    codec = codec or pick_codec()
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18", "g": "12"}
        else:
            stream.bit_rate = 2_000_000
            stream.options = {"g": "12"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_synthetic_dataset(out_dir: str, num_train: int = 320, num_val: int = 80,
                            num_frames: int = 24, size: tuple[int, int] = (64, 64), seed: int = 0,
                            num_classes: int = len(CLASSES), fps: int = 25) -> dict:
    """Write ``train.txt``, ``val.txt`` (``<relpath> <label>``), ``classes.txt`` and the mp4 files.

    Classes are balanced (clip ``i`` has label ``i % num_classes``). Returns ``{"train_list",
    "val_list", "classes_file", "num_classes", "root", "codec"}``; list paths are relative to
    ``root`` (= ``out_dir``).
    """
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes={num_classes} must be in [1, {len(CLASSES)}]")
    h, w = int(size[0]), int(size[1])
    if h % 2 or w % 2 or h < 16 or w < 16:
        raise ValueError(f"size={size}: height and width must be even and >= 16 (yuv420p)")
    codec = pick_codec()
    os.makedirs(out_dir, exist_ok=True)
    classes = CLASSES[:num_classes]
    lists = {}
    for split_id, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        lines = []
        for i in range(count):
            label = i % num_classes
            rel = os.path.join("videos", split, f"{split}_{i:05d}_{classes[label]}.mp4")
            full = os.path.join(out_dir, rel)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            rng = np.random.default_rng([seed, split_id, i])
            write_video(full, render_clip(label, num_frames, (h, w), rng), fps=fps, codec=codec)
            lines.append(f"{rel} {label}\n")
        lists[split] = os.path.join(out_dir, f"{split}.txt")
        with open(lists[split], "w") as f:
            f.writelines(lines)
    classes_file = os.path.join(out_dir, "classes.txt")
    with open(classes_file, "w") as f:
        f.write("\n".join(classes) + "\n")
    return {"train_list": lists["train"], "val_list": lists["val"], "classes_file": classes_file,
            "num_classes": num_classes, "root": out_dir, "codec": codec}
