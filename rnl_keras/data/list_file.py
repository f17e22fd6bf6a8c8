"""Parse and validate list files before any decoding starts.

Video lists have lines ``<path> <label>``; frame-folder lists (TSM format) ``<folder> <num_frames>
<label>``. Paths may contain spaces (the numbers are split off the right). Blank lines and lines
starting with ``#`` are ignored. Every problem is collected and reported at once as
``"<list file>:<line>: <reason>"``. For the ``tfrecord`` source the "list" is a glob / shard list and
the labels are checked against the manifests ``prepare_data.py`` writes next to each shard, and each
shard against its manifest's record count and byte size (a shard cut short is named; what happens next
follows ``on_bad_sample``).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os

from absl import logging

from rnl_keras.data.config import DataConfig
from rnl_keras.data.errors import DamagedShardError, ListFileError
from rnl_keras.data.tfrecord import check_shard, read_manifest


@dataclasses.dataclass(frozen=True)
class Entry:
    """One sample of a list file. ``index`` is its position among the kept lines (the video index)."""

    path: str          # absolute or root-joined path
    label: int
    num_frames: int    # from the list (frames) or -1 (video: probed at decode time)
    line: int          # 1-based line number in the list file
    index: int


def _read_lines(list_file: str) -> list[str]:
    if not os.path.isfile(list_file):
        raise ListFileError([f"{list_file}:0: list file not found"])
    with open(list_file, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = raw[:e.start].count(b"\n") + 1
        raise ListFileError([f"{list_file}:{lineno}: not UTF-8 text ({e.reason})"])
    return text.splitlines()


def _parse_int(text: str, what: str) -> tuple[int | None, str | None]:
    try:
        return int(text), None
    except ValueError:
        return None, f"{what} {text!r} is not an integer"


def parse_list_file(cfg: DataConfig) -> tuple[list[Entry], list[str]]:
    """Return ``(entries, problems)`` of a video or frame-folder list; does not raise on bad lines."""
    n_fields = 3 if cfg.source == "frames" else 2
    expect = "<folder> <num_frames> <label>" if cfg.source == "frames" else "<path> <label>"
    entries, problems = [], []
    for lineno, line in enumerate(_read_lines(cfg.list_file), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{cfg.list_file}:{lineno}"
        parts = stripped.rsplit(None, n_fields - 1)
        if len(parts) != n_fields:
            problems.append(f"{where}: malformed line {stripped!r}, expected {expect}")
            continue
        label, err = _parse_int(parts[-1], "label")
        if err:
            problems.append(f"{where}: {err} (expected {expect})")
            continue
        if label < 0 or (cfg.num_classes is not None and label >= cfg.num_classes):
            top = cfg.num_classes if cfg.num_classes is not None else "num_classes"
            problems.append(f"{where}: label {label} outside [0, {top})")
            continue
        num_frames = -1
        if cfg.source == "frames":
            num_frames, err = _parse_int(parts[1], "num_frames")
            if err or num_frames < 1:
                problems.append(f"{where}: {err or f'num_frames {num_frames} must be >= 1'}")
                continue
        path = os.path.join(cfg.root, parts[0]) if cfg.root else parts[0]
        entries.append(Entry(path, label, num_frames, lineno, len(entries)))
    return entries, problems


def shard_paths(cfg: DataConfig) -> list[str]:
    """Shard files named by ``cfg.list_file``: glob(s) separated by commas, or a ``.txt`` file of paths."""
    spec = cfg.list_file
    if spec.endswith(".txt") and os.path.isfile(spec):
        with open(spec) as f:
            names = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        return [os.path.join(cfg.root, n) if cfg.root else n for n in names]
    out = []
    for pattern in spec.split(","):
        pattern = os.path.join(cfg.root, pattern) if cfg.root else pattern
        out.extend(sorted(glob.glob(pattern)))
    return out


def manifest_path(shard: str) -> str:
    """The JSON manifest written next to a complete shard."""
    return shard + ".json"


def _validate_shards(cfg: DataConfig) -> tuple[list[str], list[str]]:
    shards, problems, damaged = [], [], []
    paths = shard_paths(cfg)
    if not paths:
        return [], [f"{cfg.list_file}:0: no shard files match"]
    for shard in paths:
        if not os.path.isfile(shard):
            problems.append(f"{shard}:0: shard file not found")
            continue
        mpath = manifest_path(shard)
        if not os.path.isfile(mpath):
            problems.append(f"{shard}:0: no manifest {os.path.basename(mpath)} (incomplete shard?)")
            continue
        manifest = read_manifest(shard)
        if manifest is None or "num_examples" not in manifest:
            problems.append(f"{shard}:0: manifest {mpath} is not a valid shard manifest")
            continue
        bad = False
        if cfg.num_classes is not None:
            for i, label in enumerate(manifest.get("labels", [])):
                if not 0 <= label < cfg.num_classes:
                    problems.append(f"{shard}:{i}: label {label} outside [0, {cfg.num_classes})")
                    bad = True
        if bad:
            continue
        problem = _checked_shard(shard, manifest)
        if problem:
            damaged.append(f"{shard}: {problem}")
        shards.append(shard)
    _apply_shard_policy(cfg, damaged)
    return shards, problems


_check_cache: dict = {}


def _checked_shard(shard: str, manifest: dict) -> str | None:
    """:func:`check_shard`, remembered while the file's size and mtime stay the same."""
    st = os.stat(shard)
    key = (shard, st.st_size, st.st_mtime_ns, manifest.get("num_examples"),
           manifest.get("num_bytes"))
    if key not in _check_cache:
        _check_cache[key] = check_shard(shard, manifest)[1]
    return _check_cache[key]


def _apply_shard_policy(cfg: DataConfig, damaged: list[str]) -> None:
    """Shards cut short or changed since ``prepare_data.py`` wrote them: the bad-sample policy.

    ``on_bad_sample="raise"`` stops (:class:`DamagedShardError` naming every such shard);
    ``"skip"`` warns here, reads the records that remain, and the pipeline counts the lost ones
    as bad samples named by the shard on every pass.
    """
    if not damaged:
        return
    if cfg.on_bad_sample == "raise":
        raise DamagedShardError(damaged)
    for d in damaged:
        logging.warning("damaged shard %s (its lost records are skipped and counted as bad "
                        "samples)", d)


def validate_list_file(cfg: DataConfig) -> list:
    """Check the whole list file; return its entries (or shard paths for ``tfrecord``).

    Raises:
      ListFileError: listing every problem as ``"<list file>:<line>: <reason>"`` (unless
        ``cfg.on_bad_line == "skip"``, which logs the problems and drops those lines).
    """
    if cfg.source == "tfrecord":
        entries, problems = _validate_shards(cfg)
    else:
        entries, problems = parse_list_file(cfg)
    if problems:
        if cfg.on_bad_line == "raise" or not entries:
            raise ListFileError(problems)
        for p in problems:
            logging.warning("skipped list line %s", p)
    if not entries:
        raise ListFileError([f"{cfg.list_file}:0: no samples"])
    return entries


def count_samples(cfg: DataConfig) -> int:
    """Samples one pass over ``cfg``'s list holds (before bad samples are found at decode time).

    Video / frame lists: the valid lines. TFRecord shards: the manifests' record counts (what
    ``prepare_data.py`` wrote), so steps per epoch can be derived for shards too.

    Raises:
      ListFileError: as :func:`validate_list_file`.
    """
    items = validate_list_file(cfg)
    if cfg.source != "tfrecord":
        return len(items)
    return sum(int(read_manifest(shard)["num_examples"]) for shard in items)
