"""Convert a video or frame-folder list into TFRecord shards (the engine of ``prepare_data.py``).

Shards are written by ``num_workers`` processes, each through a temporary file and a rename; a
rerun keeps the shards whose manifest entry (byte size, record count) still matches and rewrites
the others, so an interrupted preparation resumes. The shard format is
:mod:`rnl_keras.data.tfrecord`.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os

from absl import logging

from rnl_keras.data.config import DataConfig
from rnl_keras.data.list_file import validate_list_file
from rnl_keras.data.tfrecord import (Progress, remove_stale_temporaries, shard_name, shard_status,
                                     write_shard)


def _worker(args):
    shard, items, kw = args
    return shard, write_shard(shard, items, **kw)


def prepare_shards(cfg: DataConfig, output_dir: str, num_shards: int = 8, prefix: str = "data",
                   resize_shorter: int | None = 256, jpeg_quality: int = 90, frame_stride: int = 1,
                   num_workers: int = 1, show_progress: bool = True) -> dict:
    """Write ``num_shards`` shards for the samples of ``cfg`` (video or frames source).

    Sample ``i`` of the list goes to shard ``i % num_shards``. Temporaries left by killed runs are
    removed first. Shards already complete and intact (shard + manifest, same byte size and record
    count: :func:`rnl_keras.data.tfrecord.shard_status`) are kept, so an interrupted run resumes;
    a shard cut short or changed since is logged by name and rewritten.

    Returns:
      ``{"shards", "written", "skipped_shards", "rewritten", "num_examples", "bad_samples",
      "notes", "removed_temporaries"}``: ``rewritten`` maps damaged shards to what was wrong,
      ``notes`` lists problems worked around (e.g. a truncated video whose frames were kept).
    """
    if cfg.source not in ("video", "frames"):
        raise ValueError(f"prepare_shards: source must be 'video' or 'frames', not {cfg.source!r}")
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards} must be >= 1")
    entries = validate_list_file(cfg)
    os.makedirs(output_dir, exist_ok=True)
    removed = remove_stale_temporaries(output_dir, prefix)
    for tmp in removed:
        logging.warning("removed %s (left by a killed run)", tmp)
    kw = dict(source=cfg.source, template=cfg.frame_template, start=cfg.frame_index_start,
              resize_shorter=resize_shorter, quality=jpeg_quality, stride=frame_stride)
    jobs, done, rewritten = [], [], {}
    for i in range(num_shards):
        shard = shard_name(output_dir, prefix, i, num_shards)
        why = shard_status(shard)
        if why is None:
            done.append(shard)
            continue
        if os.path.exists(shard) or os.path.exists(shard + ".json"):
            rewritten[shard] = why
            logging.warning("rewriting %s: %s", shard, why)
        items = [(e.path, e.label, e.num_frames, e.index) for e in entries[i::num_shards]]
        jobs.append((shard, items, kw))
    if done:
        logging.info("resuming: %d of %d shards already complete", len(done), num_shards)
    manifests = _run_jobs(jobs, num_workers, show_progress)
    return {"shards": [shard_name(output_dir, prefix, i, num_shards) for i in range(num_shards)],
            "written": sorted(manifests), "skipped_shards": done, "rewritten": rewritten,
            "num_examples": sum(m["num_examples"] for m in manifests.values()),
            "bad_samples": [m for man in manifests.values() for m in man["skipped"]],
            "notes": [m for man in manifests.values() for m in man.get("notes", [])],
            "removed_temporaries": removed}


def _run_jobs(jobs: list, num_workers: int, show_progress: bool) -> dict:
    """Write the shards of ``jobs`` in this process or a pool; returns {shard: manifest}."""
    total = sum(len(j[1]) for j in jobs)
    progress = Progress(total, "prepare ") if show_progress and total else None
    manifests = {}
    if num_workers <= 1 or len(jobs) <= 1:
        for shard, items, kw_ in jobs:
            manifests[shard] = write_shard(shard, items, progress=progress, **kw_)
    else:
        ctx = mp.get_context("spawn")   # TF is not fork-safe
        pool = cf.ProcessPoolExecutor(num_workers, mp_context=ctx)
        try:
            for shard, manifest in pool.map(_worker, jobs):
                manifests[shard] = manifest
                if progress is not None:
                    progress(manifest["num_examples"] + len(manifest["skipped"]))
        finally:   # on an error, do not start the shards still queued
            pool.shutdown(wait=True, cancel_futures=True)
    return manifests
