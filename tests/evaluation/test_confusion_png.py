"""The confusion-matrix PNG: written, opens with Pillow, expected size, shading follows values."""
import numpy as np
from PIL import Image

from rnl_keras.evaluation.confusion import draw_confusion_matrix, layout


def test_png_with_class_names(tmp_path):
    cm = np.array([[8, 2, 0], [0, 5, 5], [1, 0, 9]])
    names = ["abseiling", "air drumming", "zumba"]
    path = tmp_path / "cm.png"
    size = draw_confusion_matrix(cm, str(path), class_names=names)
    geo = layout(3, names)
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == size == (geo["width"], geo["height"])
        rgb = np.asarray(img.convert("RGB")).astype(int)
    c, left, top = geo["cell"], geo["left"], geo["top"]

    def cell(i, j):   # colour near the cell's corner (away from the count text)
        return rgb[top + i * c + 2, left + j * c + 2]

    assert tuple(cell(0, 2)) == (255, 255, 255)               # zero count: white
    assert cell(0, 0).sum() < cell(0, 1).sum() < 255 * 3      # 0.8 darker than 0.2
    assert cell(0, 0)[1] > cell(0, 0)[2]                      # diagonal: green tone
    assert cell(1, 2)[2] > cell(1, 2)[0]                      # off-diagonal: blue tone
    # Class names take room on the left: the matrix starts right of the longest name.
    assert left > 40
    # Some text pixels in the label margin (names are drawn).
    assert (rgb[top:top + 3 * c, :left - 4] < 128).any()


def test_png_many_classes_without_names(tmp_path):
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 5, (120, 120))
    path = tmp_path / "big.png"
    size = draw_confusion_matrix(cm, str(path), class_names=[f"class {i}" for i in range(120)])
    geo = layout(120, [f"class {i}" for i in range(120)])
    assert not geo["named"] and geo["cell"] >= 4
    with Image.open(path) as img:
        assert img.size == size
        assert 120 * geo["cell"] < img.size[0] < 2000
