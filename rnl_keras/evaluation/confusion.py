"""Draw a confusion matrix as a PNG with Pillow (no matplotlib).

Rows are true classes, columns predicted classes; each cell is shaded by its row-normalised value
(white = 0, dark blue = 1, square-root scale; the diagonal is drawn in green tones so correct predictions stand out).
Class names label the axes when there are at most ``max_named`` classes; with more, tick numbers
every few classes are drawn instead. Counts are written in cells that are large enough.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:   # Pillow < 10.1
        return ImageFont.load_default()


def _text_size(draw, text, font):
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def layout(num_classes: int, class_names=None, cell: int | None = None, max_named: int = 40):
    """Geometry of the image: ``dict(cell, left, top, width, height, named)``."""
    if cell is None:
        cell = int(np.clip(800 // max(num_classes, 1), 4, 48))
    named = class_names is not None and num_classes <= max_named
    font = _font(max(8, min(14, cell - 2)))
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if named:
        label_w = max(_text_size(scratch, str(n), font)[0] for n in class_names) + 10
    else:
        label_w = _text_size(scratch, str(num_classes), font)[0] + 10
    left = label_w + 24
    top = 40 + (label_w if named else 20)
    legend = 60
    title_w = _text_size(scratch, _title(num_classes, 10 ** 6), _font(14))[0]
    width = max(left + num_classes * cell + legend + 10, left + title_w + 10)
    height = top + num_classes * cell + 30
    return {"cell": cell, "left": left, "top": top, "width": width, "height": height,
            "named": named, "font": font}


def _title(num_classes, total):
    return f"Confusion matrix ({int(total)} videos; rows: true, columns: predicted)"


def _shade(value: float, diagonal: bool) -> tuple[int, int, int]:
    # Square root: small confusions (a few % of a row) stay visible.
    v = float(np.sqrt(np.clip(value, 0.0, 1.0)))
    if diagonal:
        end = (0, 109, 44)
    else:
        end = (8, 48, 107)
    return tuple(int(round(255 + (e - 255) * v)) for e in end)


def draw_confusion_matrix(cm: np.ndarray, path: str, class_names=None, title: str | None = None,
                          cell: int | None = None, max_named: int = 40) -> tuple[int, int]:
    """Write ``cm`` (K, K) counts to ``path`` (PNG); returns the image size ``(width, height)``."""
    cm = np.asarray(cm, np.float64)
    k = cm.shape[0]
    if cm.ndim != 2 or cm.shape[1] != k:
        raise ValueError(f"confusion matrix must be square, got {cm.shape}")
    if class_names is not None and len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for a {k}x{k} matrix")
    geo = layout(k, class_names, cell, max_named)
    c, left, top, font = geo["cell"], geo["left"], geo["top"], geo["font"]
    img = Image.new("RGB", (geo["width"], geo["height"]), "white")
    draw = ImageDraw.Draw(img)
    support = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)
    draw.text((left, 6), title or _title(k, cm.sum()), fill="black", font=_font(14))
    for i in range(k):
        for j in range(k):
            x0, y0 = left + j * c, top + i * c
            color = _shade(norm[i, j], i == j)
            draw.rectangle([x0, y0, x0 + c - 1, y0 + c - 1], fill=color,
                           outline=(220, 220, 220) if c >= 8 else None)
            if c >= 22 and cm[i, j] > 0:
                text = str(int(cm[i, j]))
                tw, th = _text_size(draw, text, font)
                if tw < c - 2:
                    ink = "white" if norm[i, j] > 0.3 else "black"
                    draw.text((x0 + (c - tw) / 2, y0 + (c - th) / 2 - 1), text, fill=ink, font=font)
    # Axes: class names (rotated for columns) or tick numbers.
    if geo["named"]:
        for i, name in enumerate(class_names):
            tw, th = _text_size(draw, str(name), font)
            draw.text((left - tw - 6, top + i * c + (c - th) / 2 - 1), str(name), fill="black",
                      font=font)
            label = Image.new("RGBA", (tw + 4, th + 6), (255, 255, 255, 0))
            ImageDraw.Draw(label).text((2, 0), str(name), fill="black", font=font)
            label = label.rotate(90, expand=True)
            img.paste(label, (int(left + i * c + (c - label.width) / 2), top - label.height - 4),
                      label)
    else:
        step = max(1, int(np.ceil(20 / c)))
        for i in range(0, k, step):
            tw, th = _text_size(draw, str(i), font)
            draw.text((left - tw - 6, top + i * c), str(i), fill="black", font=font)
            draw.text((left + i * c, top - th - 6), str(i), fill="black", font=font)
    draw.rectangle([left - 1, top - 1, left + k * c, top + k * c], outline="black")
    # Legend: shade scale for row-normalised values.
    lx = left + k * c + 20
    span = k * c
    for y in range(span):
        v = 1.0 - y / max(span - 1, 1)
        draw.line([lx, top + y, lx + 14, top + y], fill=_shade(v, False))
    draw.rectangle([lx - 1, top - 1, lx + 15, top + span], outline="black")
    draw.text((lx, top - 16), "1.0", fill="black", font=_font(10))
    draw.text((lx, top + k * c + 2), "0.0", fill="black", font=_font(10))
    img.save(path, format="PNG")
    return img.size
