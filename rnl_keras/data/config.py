"""The one configuration object of the input pipeline: :class:`DataConfig`.

Every reader of clips (training and evaluation datasets, list-file checks, shard preparation, the
tf.data service) takes a ``DataConfig``: where the clips come from, how frames are sampled and how
clips are augmented or cropped for test. The supported sources and video extensions live here too.
"""
from __future__ import annotations

import dataclasses

from rnl_keras.imagenet import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (re-exported)

SOURCES = ("video", "frames", "tfrecord")
SAMPLINGS = ("tsn", "dense")
MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mpg", ".mpeg", ".mov", ".m4v")


@dataclasses.dataclass
class DataConfig:
    """Where the clips come from and how they are sampled and augmented.

    Attributes:
      source: ``"video"`` (list lines ``<path> <label>``), ``"frames"`` (lines
        ``<folder> <num_frames> <label>``) or ``"tfrecord"`` (``list_file`` is a glob, a comma separated
        list of globs, or a text file with one shard path a line).
      list_file: the list file / shard glob.
      root: paths in the list file are relative to this directory.
      frame_template: file name template of frame folders (``"{:05d}.jpg"`` for SSv1).
      frame_index_start: number of the first frame file (TSM numbers frames from 1).
      num_classes: labels must lie in ``[0, num_classes)`` (unchecked when None).
      num_frames: T, frames per clip.
      sampling: ``"tsn"`` (one frame per segment) or ``"dense"`` (``dense_stride`` apart).
      twice_sample: at test, TSN adds the segment starts to the segment centres (2 clips).
      dense_stride: frame stride of dense sampling (window = stride * T).
      test_clips: clips per video at test (dense windows / TSN offsets).
      test_crops: 1 (centre) or 3 (start, centre, end of the longer side) crops per clip at test.
      image_size: crop size S fed to the model.
      resize_shorter: the shorter side is resized to this at test; decoded video frames larger than it
        are downscaled to it at decode time (as prepared shards are).
      flip: random horizontal flip at training (off for Something-Something).
      flip_label_map: label swaps applied when a clip is flipped (e.g. left<->right classes).
      on_bad_sample: ``"skip"`` (log, count, drop) or ``"raise"``.
      on_bad_line: ``"raise"`` (ListFileError listing every problem) or ``"skip"`` (log and drop lines).
      seed: seed of shuffling / sampling / augmentation (None: random).
      deterministic: keep element order fixed under parallel map (``tf.data`` determinism).
      num_parallel_calls: parallel decode calls (-1: AUTOTUNE).
      shuffle_buffer: shuffle buffer of the training set (entries for files, examples for shards).
      cycle_length: shards read at once (tfrecord interleave).
    """

    source: str
    list_file: str
    root: str = ""
    frame_template: str = "img_{:05d}.jpg"
    num_classes: int | None = None
    num_frames: int = 8
    sampling: str = "tsn"
    twice_sample: bool = False
    dense_stride: int = 8
    test_clips: int = 1
    test_crops: int = 1
    image_size: int = 224
    resize_shorter: int = 256
    flip: bool = True
    flip_label_map: dict[int, int] | None = None
    on_bad_sample: str = "skip"
    seed: int | None = None
    deterministic: bool = False
    num_parallel_calls: int = -1
    frame_index_start: int = 1
    on_bad_line: str = "raise"
    shuffle_buffer: int = 1024
    cycle_length: int = 4

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field when a value is out of range."""
        def bad(field, why):
            raise ValueError(f"DataConfig.{field}={getattr(self, field)!r}: {why}")
        if self.source not in SOURCES:
            bad("source", f"must be one of {SOURCES}")
        if self.sampling not in SAMPLINGS:
            bad("sampling", f"must be one of {SAMPLINGS}")
        if self.on_bad_sample not in ("skip", "raise"):
            bad("on_bad_sample", "must be 'skip' or 'raise'")
        if self.on_bad_line not in ("skip", "raise"):
            bad("on_bad_line", "must be 'skip' or 'raise'")
        if self.test_crops not in (1, 3):
            bad("test_crops", "must be 1 or 3")
        for name in ("num_frames", "dense_stride", "test_clips", "image_size", "resize_shorter",
                     "shuffle_buffer", "cycle_length"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be >= 1")
        if self.num_classes is not None and int(self.num_classes) < 1:
            bad("num_classes", "must be >= 1 or None")
        if self.resize_shorter < self.image_size:
            bad("resize_shorter", f"must be >= image_size ({self.image_size})")
        try:
            self.frame_template.format(1)
        except (IndexError, KeyError, ValueError) as e:
            bad("frame_template", f"cannot format a frame number ({e})")
        if self.flip_label_map:
            self.flip_label_map = {int(k): int(v) for k, v in self.flip_label_map.items()}
            if self.num_classes is not None:
                for k, v in self.flip_label_map.items():
                    if not (0 <= k < self.num_classes and 0 <= v < self.num_classes):
                        bad("flip_label_map", f"{k}->{v} outside [0, {self.num_classes})")

    @property
    def num_test_clips(self) -> int:
        """Clips per video at test (TSN ``twice_sample`` doubles them)."""
        if self.sampling == "tsn" and self.twice_sample:
            return 2 * self.test_clips
        return self.test_clips

    @property
    def views_per_video(self) -> int:
        """Views (clips x crops) per video at test."""
        return self.num_test_clips * self.test_crops
