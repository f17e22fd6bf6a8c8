"""Build training and evaluation ``tf.data`` pipelines for all three sources.

Video files and frame folders are decoded by Python loaders (PyAV / eager ``decode_jpeg``) inside
``tf.py_function``; each call returns an ok-flag and bad samples are filtered out of the stream (never
replaced by zeros) and recorded in :class:`BadSampleLog`. TFRecord shards are read with pure TF ops
only (parse, ``tf.random`` stateless sampling, ``decode_jpeg``, crop); a shard that yields fewer records
than its manifest says (cut short, corrupt) is counted as that many bad samples named by the shard.
Without ``repeat`` a training dataset is exactly one pass over the list: each good clip once, each bad
one counted once (:func:`pad_end_of_pass` lets a trainer end the epoch there). All randomness is
stateless and driven by per-element seeds from ``Dataset.random(cfg.seed)``, so a seeded,
deterministic pipeline repeats exactly; every epoch draws new seeds.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from rnl_keras.data import augment, sampling
from rnl_keras.data.config import DataConfig
from rnl_keras.data.errors import BadSampleError, BadSampleLog
from rnl_keras.data.frames import read_frame_files
from rnl_keras.data.list_file import validate_list_file
from rnl_keras.data.tfrecord import parse_sequence_example, read_manifest
from rnl_keras.data.video import probe_num_frames, read_video_frames

AUTOTUNE = tf.data.AUTOTUNE


def _calls(cfg: DataConfig) -> int:
    return AUTOTUNE if cfg.num_parallel_calls in (None, -1) else int(cfg.num_parallel_calls)


def _guard(cfg: DataConfig, path: str, fn):
    """Run ``fn``; on BadSampleError skip (record, return None) or raise, per ``cfg.on_bad_sample``."""
    try:
        return fn()
    except BadSampleError as e:
        if cfg.on_bad_sample == "raise":
            raise
        BadSampleLog.record(e.path, e.reason)
        return None


def _py_probe(cfg: DataConfig):
    def probe(path_t):
        path = path_t.numpy().decode("utf-8", "surrogateescape")
        n = _guard(cfg, path, lambda: probe_num_frames(path))
        return np.int32(n or 0), n is not None
    return probe


def _py_decode(cfg: DataConfig, max_shorter):
    def decode(path_t, n_t, idx_t, ok_t):
        path = path_t.numpy().decode("utf-8", "surrogateescape")
        if not bool(ok_t.numpy()):
            return np.zeros((1, 1, 1, 3), np.uint8), False
        idx = idx_t.numpy()
        if cfg.source == "video":
            frames = _guard(cfg, path, lambda: read_video_frames(path, idx, max_shorter))
        else:
            frames = _guard(cfg, path, lambda: read_frame_files(
                path, idx, cfg.frame_template, cfg.frame_index_start, int(n_t.numpy())))
        if frames is None:
            return np.zeros((1, 1, 1, 3), np.uint8), False
        return frames, True
    return decode


def _load_fn(cfg: DataConfig, index_fn, max_shorter=None):
    """(path, label, n, video_index, seed) -> (frames uint8 (K, H, W, 3), label, video_index, ok).

    ``max_shorter``: video frames are downscaled to it at decode time (training); ``None`` decodes
    at full size (evaluation: the test-time transform resizes, exactly as the exported graph).
    """
    probe, decode = _py_probe(cfg), _py_decode(cfg, max_shorter)

    def load(path, label, n, video_index, seed):
        if cfg.source == "video":
            n, ok = tf.py_function(probe, [path], [tf.int32, tf.bool])
        else:
            ok = tf.constant(True)
        idx = tf.reshape(index_fn(n, seed), [-1])
        frames, ok2 = tf.py_function(decode, [path, n, idx, ok], [tf.uint8, tf.bool])
        frames.set_shape([None, None, None, 3])
        return frames, label, video_index, tf.logical_and(ok, ok2)
    return load


def _options(cfg: DataConfig, policy) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = bool(cfg.deterministic)
    options.experimental_distribute.auto_shard_policy = policy
    return options


def _entries_dataset(cfg: DataConfig, input_context):
    entries = validate_list_file(cfg)
    ds = tf.data.Dataset.from_tensor_slices((
        tf.constant([e.path for e in entries]),
        tf.constant([e.label for e in entries], tf.int32),
        tf.constant([e.num_frames for e in entries], tf.int32),
        tf.constant([e.index for e in entries], tf.int32)))
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds, len(entries)


def _shard_records(cfg: DataConfig, input_context, shuffle: bool):
    """Serialized records of the (validated) shards; each shard's lost records are accounted for.

    A shard whose reading stops early (cut short, corrupt record: ``DataLossError``) yields the
    records before the damage; at its end the records read are compared with its manifest's count
    and the difference is handled by the bad-sample policy (:func:`_shard_end_check`).
    """
    shards = validate_list_file(cfg)
    expected = [int(read_manifest(s)["num_examples"]) for s in shards]
    files = tf.data.Dataset.from_tensor_slices((tf.constant(shards), tf.constant(expected, tf.int64)))
    if input_context is not None and input_context.num_input_pipelines > 1:
        files = files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    read = _shard_reader(cfg)
    if shuffle:
        files = files.shuffle(len(shards), seed=cfg.seed, reshuffle_each_iteration=True)
        return files.interleave(read, cycle_length=cfg.cycle_length,
                                num_parallel_calls=_calls(cfg), deterministic=cfg.deterministic)
    return files.interleave(read, cycle_length=1)


def _shard_reader(cfg: DataConfig):
    """(shard path, expected records) -> dataset of its records, then a check of the count."""
    check = _shard_end_check(cfg)

    def read(path, expected):
        records = tf.data.TFRecordDataset(path).ignore_errors()   # ends at the first damage
        marked = records.map(lambda r: (r, tf.constant(False))).concatenate(
            tf.data.Dataset.from_tensors((tf.constant(b""), tf.constant(True))))
        counted = marked.scan(tf.constant(0, tf.int64), lambda n, el: (
            n + tf.cast(tf.logical_not(el[1]), tf.int64), (el[0], el[1], n)))
        checked = counted.map(lambda r, end, n: (r, end, tf.cond(
            end, lambda: tf.py_function(check, [path, n, expected], tf.bool),
            lambda: tf.constant(True))))
        return checked.filter(lambda r, end, ok: tf.logical_not(end)).map(lambda r, end, ok: r)
    return read


def _shard_end_check(cfg: DataConfig):
    def check(path_t, read_t, expected_t):
        path = path_t.numpy().decode("utf-8", "surrogateescape")
        read, expected = int(read_t.numpy()), int(expected_t.numpy())
        if read < expected:
            reason = (f"TFRecord shard cut short or corrupt: {read} of {expected} records "
                      f"readable, {expected - read} lost")
            if cfg.on_bad_sample == "raise":
                raise BadSampleError(path, reason)
            BadSampleLog.record(path, reason, count=expected - read)
        return True
    return check


def _with_seeds(ds, cfg: DataConfig):
    seeds = tf.data.Dataset.random(seed=cfg.seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip((ds, seeds)).map(
        lambda el, r: (*el, tf.stack([r, tf.constant(0, tf.int64)])) if isinstance(el, tuple)
        else (el, tf.stack([r, tf.constant(0, tf.int64)])))


def _per_replica(batch_size: int, input_context) -> int:
    if input_context is None:
        return batch_size
    return input_context.get_per_replica_batch_size(batch_size)


def make_train_dataset(cfg: DataConfig, batch_size: int,
                       input_context: tf.distribute.InputContext | None = None,
                       repeat: bool = False) -> tf.data.Dataset:
    """Shuffled, augmented training batches ``(clips float32 (B, T, S, S, 3), labels int32 (B,))``.

    Args:
      cfg: the data configuration (the list file is validated first: :class:`ListFileError`).
      batch_size: global batch size; with ``input_context`` each pipeline batches
        ``input_context.get_per_replica_batch_size(batch_size)``.
      input_context: from ``strategy.distribute_datasets_from_function``: files are sharded by
        sample (video / frames), shards by file (tfrecord).
      repeat: repeat forever (each epoch reshuffles and redraws sampling/augmentation). Without
        it the dataset is one pass: ``(good samples) // batch`` batches, which is fewer than
        ``len(list) // batch`` when samples are bad (see :func:`pad_end_of_pass`).
    """
    bs = _per_replica(batch_size, input_context)
    calls = _calls(cfg)

    def augment_fn(frames, label, seed):
        clip, label, _ = augment.train_augment(frames, label, cfg,
                                               tf.random.experimental.stateless_split(seed, 2)[1])
        return clip, label

    if cfg.source == "tfrecord":
        ds = _shard_records(cfg, input_context, shuffle=True)
        ds = ds.shuffle(cfg.shuffle_buffer, seed=cfg.seed, reshuffle_each_iteration=True)
        ds = _with_seeds(ds, cfg)

        def parse(record, seed):
            ex = parse_sequence_example(record)
            seeds = tf.random.experimental.stateless_split(seed, 2)
            idx = sampling.train_indices(ex["num_frames"], cfg, seeds[0])
            frames = _decode_jpegs(tf.gather(ex["frames"], idx))
            return augment_fn(frames, ex["label"], seeds[1])
        ds = ds.map(parse, num_parallel_calls=calls, deterministic=cfg.deterministic)
        if cfg.on_bad_sample == "skip":
            ds = ds.ignore_errors(log_warning=True)
        policy = tf.data.experimental.AutoShardPolicy.FILE
    else:
        ds, n = _entries_dataset(cfg, input_context)
        ds = ds.shuffle(min(n, max(cfg.shuffle_buffer, n)), seed=cfg.seed,
                        reshuffle_each_iteration=True)
        ds = _with_seeds(ds, cfg)
        load = _load_fn(cfg, lambda n, seed: sampling.train_indices(
            n, cfg, tf.random.experimental.stateless_split(seed, 2)[0]), cfg.resize_shorter)

        def load_train(path, label, n, video_index, seed):
            frames, label, _, ok = load(path, label, n, video_index, seed)
            return frames, label, seed, ok
        ds = ds.map(load_train, num_parallel_calls=calls, deterministic=cfg.deterministic)
        ds = ds.filter(lambda frames, label, seed, ok: ok)
        ds = ds.map(lambda frames, label, seed, ok: augment_fn(frames, label, seed),
                    num_parallel_calls=calls, deterministic=cfg.deterministic)
        policy = tf.data.experimental.AutoShardPolicy.DATA
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(bs, drop_remainder=True).prefetch(AUTOTUNE)
    return ds.with_options(_options(cfg, policy))


def pad_end_of_pass(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Follow a finite stream of ``(clips, labels)`` batches with endless end-of-pass batches.

    An epoch is one pass over the list: bad samples are filtered out before batching, so a pass
    yields a number of batches that is only known at its end (and differs between input pipelines
    when samples are sharded). A trainer that draws one batch per replica per step checks each
    step's labels with :func:`is_end_of_pass` (all-reduced over replicas and workers, so every
    worker stops at the same step) and ends the epoch when any replica's pass is over, instead of
    reading into the next pass (which repeats good clips and counts bad ones twice). The marker
    batches have the stream's shapes (unknown dimensions: 1), zero clips and labels ``-1``.

    Args:
      ds: a finite dataset of ``(clips, labels)`` batches (labels >= 0).

    Returns:
      The dataset followed by infinitely many marker batches.
    """
    def marker(spec, fill):
        shape = [1 if d is None else d for d in spec.shape.as_list()]
        return tf.fill(shape, tf.constant(fill, spec.dtype))
    clip_spec, label_spec = ds.element_spec
    end = tf.data.Dataset.from_tensors((marker(clip_spec, 0), marker(label_spec, -1))).repeat()
    return ds.concatenate(end)


def is_end_of_pass(labels) -> tf.Tensor:
    """True (scalar bool) when ``labels`` is an end-of-pass marker batch of :func:`pad_end_of_pass`."""
    return tf.reduce_any(labels < 0)


def _decode_jpegs(encoded):
    return tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), encoded,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def make_eval_dataset(cfg: DataConfig, batch_size: int,
                      input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Test views, in list order: ``{"clip", "label", "video_index"}`` batches, no drop_remainder.

    Each video gives ``cfg.views_per_video`` adjacent views (clip-major: all crops of clip 0, then
    clip 1, ...). ``video_index`` is the sample's position in ``validate_list_file(cfg)`` (for shards:
    its position in the list ``prepare_data.py`` read), so the evaluator can average view scores.
    """
    bs = _per_replica(batch_size, input_context)
    calls = _calls(cfg)
    views = cfg.views_per_video

    def to_views(frames, label, video_index):
        clips = tf.reshape(frames, tf.concat([[cfg.num_test_clips, cfg.num_frames],
                                              tf.shape(frames)[1:]], 0))
        out = augment.eval_views(clips, cfg)
        return {"clip": out,
                "label": tf.fill([views], tf.cast(label, tf.int32)),
                "video_index": tf.fill([views], tf.cast(video_index, tf.int32))}

    if cfg.source == "tfrecord":
        ds = _shard_records(cfg, input_context, shuffle=False)

        def parse(record):
            ex = parse_sequence_example(record)
            idx = tf.reshape(sampling.eval_indices(ex["num_frames"], cfg), [-1])
            return to_views(_decode_jpegs(tf.gather(ex["frames"], idx)), ex["label"], ex["index"])
        ds = ds.map(parse, num_parallel_calls=calls, deterministic=True)
        if cfg.on_bad_sample == "skip":
            ds = ds.ignore_errors(log_warning=True)
        policy = tf.data.experimental.AutoShardPolicy.FILE
    else:
        ds, _ = _entries_dataset(cfg, input_context)
        ds = ds.map(lambda *el: (*el, tf.zeros([2], tf.int64)))
        # Full-size decode: eval_views resizes (the one test-time transform, as serving does).
        load = _load_fn(cfg, lambda n, seed: sampling.eval_indices(n, cfg), max_shorter=None)
        ds = ds.map(load, num_parallel_calls=calls, deterministic=True)
        ds = ds.filter(lambda frames, label, vi, ok: ok)
        ds = ds.map(lambda frames, label, vi, ok: to_views(frames, label, vi),
                    num_parallel_calls=calls, deterministic=True)
        policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.unbatch().batch(bs).prefetch(AUTOTUNE)
    return ds.with_options(_options(cfg, policy))
