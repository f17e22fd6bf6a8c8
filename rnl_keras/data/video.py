"""Decode only the frames a clip needs from a video file with PyAV (frame-exact seek).

Frames are addressed by their 0-based presentation index, derived from each frame's timestamp
(``round((pts - start) * time_base * fps)``), so seeking to a keyframe and decoding forward lands on
exactly the requested frames. Containers are opened with ``metadata_errors="ignore"`` (some HMDB51
files have non-UTF-8 metadata). Every failure raises :class:`BadSampleError` naming path and reason.

A header can overstate the frame count slightly (one HMDB51 clip says 84, decodes 83). When requested
frames lie past the last decodable frame, the true count is cached and the request is rescaled onto the
decodable frames (noted in :class:`BadSampleLog`); later probes return the true count. A file that
decodes far fewer frames than both its header's count and its stream duration state (more than
``MAX_MISSING_FRAMES`` and ``MAX_MISSING_FRACTION`` of them: a truncated download or copy) is a bad
sample named by its path. The duration matters: an mp4 cut with ``ffmpeg -ss S -c copy`` keeps the
packets from the keyframe before S and an edit list that hides them, so its header counts (say) 221
frames of which the 4 s it lasts present 122: a valid clip, used with its 122 frames.
"""
from __future__ import annotations

import os
import threading
from fractions import Fraction

import av
import numpy as np

from rnl_keras.data.errors import BadSampleError, BadSampleLog

# Seek again instead of decoding forward when the next wanted frame is this far ahead.
SEEK_GAP = 48
# A file missing more frames than both of these (absolute, fraction of the header's count) is
# truncated: a bad sample. Fewer missing frames is a header that lies a little (noted, used).
MAX_MISSING_FRAMES = 2
MAX_MISSING_FRACTION = 0.05

_true_counts: dict[str, int] = {}
_probed_counts: dict[str, int] = {}   # header (or packet) counts, so a file is probed once
_seekable: dict[str, bool] = {}
_truncated: dict[str, str] = {}       # path -> reason, so a truncated file is decoded once
_lock = threading.Lock()


def truncation(header_n: int, decoded_n: int, duration_n: int = 0) -> str | None:
    """Why a video whose header says ``header_n`` frames but decodes ``decoded_n`` is truncated
    (None when the shortfall is within ``MAX_MISSING_FRAMES`` / ``MAX_MISSING_FRACTION``).

    ``duration_n``: the frames its stream duration holds (:func:`duration_frames`; 0: unknown).
    The shortfall is measured against the smaller of the two counts: an edit list (stream-copy
    trims) hides packets the header counts, and the duration says so."""
    expected = min(header_n, duration_n) if duration_n > 0 else header_n
    missing = expected - decoded_n
    if missing <= max(MAX_MISSING_FRAMES, MAX_MISSING_FRACTION * expected):
        return None
    return (f"truncated or corrupt file: the header says {header_n} frames"
            + (f" ({duration_n} in its stated duration)" if duration_n > 0 else "")
            + f" but only {decoded_n} decode")


def duration_frames(container) -> int:
    """Frames the first video stream's stated duration holds at its frame rate: for mp4 / mov
    only, whose header states the presented duration (edit lists included); 0 otherwise (an AVI's
    or a Matroska's duration is re-estimated from the data present, so it cannot tell a cut file)."""
    stream = container.streams.video[0]
    if "mp4" not in container.format.name.split(",") or not stream.duration \
            or not stream.time_base:
        return 0
    return int(round(float(stream.duration * stream.time_base * _fps(stream))))


def probe_duration_frames(path: str) -> int:
    """:func:`duration_frames` of the file's first video stream."""
    container = _open(path)
    try:
        return duration_frames(container)
    finally:
        container.close()


def _open(path: str):
    if not os.path.exists(path):
        raise BadSampleError(path, "file not found")
    if os.path.isdir(path):
        raise BadSampleError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise BadSampleError(path, "file is empty (0 bytes)")
    try:
        container = av.open(path, metadata_errors="ignore")
    except Exception as e:  # noqa: BLE001 - PyAV raises many types; all mean "cannot open"
        raise BadSampleError(path, f"cannot open container: {type(e).__name__}: {e}") from None
    if not container.streams.video:
        container.close()
        raise BadSampleError(path, "no video stream")
    return container


def _fps(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else Fraction(30)


def probe_num_frames(path: str) -> int:
    """Number of frames of a video: the (corrected) header count, or counted packets when absent."""
    with _lock:
        if path in _truncated:
            raise BadSampleError(path, _truncated[path])
        if path in _true_counts:
            return _true_counts[path]
        if path in _probed_counts:
            return _probed_counts[path]
    container = _open(path)
    try:
        stream = container.streams.video[0]
        n = int(stream.frames or 0)
        if n <= 0:   # webm / mkv / mpg usually do not store a frame count: count packets (no decode)
            try:
                n = sum(1 for p in container.demux(stream) if p.size > 0)
            except Exception as e:  # noqa: BLE001
                raise BadSampleError(path, f"cannot read packets: {type(e).__name__}: {e}") from None
        if n <= 0:
            raise BadSampleError(path, "video stream has no frames")
        with _lock:
            _probed_counts[path] = n
        return n
    finally:
        container.close()


def _to_rgb(frame, max_shorter: int | None) -> np.ndarray:
    if max_shorter:
        h, w = frame.height, frame.width
        short = min(h, w)
        if short > max_shorter:
            scale = max_shorter / short
            return frame.to_ndarray(format="rgb24", width=max(1, round(w * scale)),
                                    height=max(1, round(h * scale)))
    return frame.to_ndarray(format="rgb24")


def _pts_index(frame, start, factor: float):
    if frame.pts is None:
        return None
    return int(round((frame.pts - start) * factor))


def _decode_wanted(container, path, wanted, max_shorter, seek=True) -> tuple[dict, int, bool]:
    """Decode the frames in ``wanted``; returns ({index: rgb}, last decoded index, pts_consistent).

    ``seek=True``: frames are indexed by timestamp and the decoder seeks (backward, to the keyframe
    before the target) whenever the next wanted frame is more than ``SEEK_GAP`` frames ahead.
    ``seek=False``: decode from the start, indexing frames by decode order, and report whether every
    timestamp agreed with that order (only then is seeking frame-exact for this file).
    """
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps, tb = _fps(stream), stream.time_base or Fraction(1, 1000)
    start = stream.start_time or 0
    factor = float(tb * fps)   # timestamp units -> frames
    todo = sorted(set(wanted))
    want = set(todo)
    got: dict[int, np.ndarray] = {}
    last, pos, k, consistent = -1, -1, 0, True
    try:
        while k < len(todo):
            target = todo[k]
            if seek and (pos >= 0 or target > SEEK_GAP):
                ts = int(start + Fraction(target) / fps / tb)
                container.seek(max(ts, start), stream=stream, backward=True, any_frame=False)
            reseek = False
            for frame in container.decode(stream):
                pts_idx = _pts_index(frame, start, factor)
                if seek:
                    idx = pos + 1 if pts_idx is None else pts_idx
                else:
                    idx = pos + 1
                    consistent = consistent and pts_idx == idx
                pos = idx
                last = max(last, idx)
                if idx in want and idx not in got:
                    got[idx] = _to_rgb(frame, max_shorter)
                while k < len(todo) and todo[k] <= idx:
                    k += 1
                if k >= len(todo):
                    break
                if seek and todo[k] != target and todo[k] - idx > SEEK_GAP:
                    reseek = True
                    break
            if not reseek:
                break   # all found, or end of stream
    except (av.error.FFmpegError, ValueError, OSError) as e:
        if not got:
            raise BadSampleError(path, f"decode error: {type(e).__name__}: {e}") from None
    return got, last, consistent


def _decode(path, wanted, max_shorter, seek) -> tuple[dict, int, bool]:
    container = _open(path)
    try:
        return _decode_wanted(container, path, wanted, max_shorter, seek=seek)
    finally:
        container.close()


def read_video_frames(path: str, indices, max_shorter: int | None = None) -> np.ndarray:
    """Decode the frames ``indices`` (0-based, any order, repeats allowed) of a video file.

    Args:
      path: video file (mp4, avi, webm, mkv, mpg, ...).
      indices: frame indices; indices past the last decodable frame (header overstates the count)
        are rescaled onto the frames that exist (:func:`_substitute_past_end`).
      max_shorter: when given, frames whose shorter side exceeds it are downscaled to it (swscale).

    Returns:
      uint8 array ``(len(indices), H, W, 3)`` RGB.

    Raises:
      BadSampleError: the file is missing, empty, not a video, corrupt, or yields no frames.
    """
    indices = _checked_indices(indices)
    got, last = _decode_requested(path, indices, max_shorter)
    missing = sorted({i for i in indices if i not in got})
    if missing:
        _substitute_past_end(path, indices, missing, got, last, max_shorter)
    frames = [got[i] for i in indices]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise BadSampleError(path, f"frame size changes inside the video: {sorted(shapes)}")
    return np.stack(frames)


def _checked_indices(indices) -> list[int]:
    """``indices`` as a flat list of ints; ``ValueError`` when empty or negative."""
    indices = [int(i) for i in np.asarray(indices).reshape(-1)]
    if not indices:
        raise ValueError("read_video_frames: no indices")
    if min(indices) < 0:
        raise ValueError(f"read_video_frames: negative index in {indices}")
    return indices


def _decode_requested(path: str, indices: list, max_shorter) -> tuple[dict, int]:
    """Decode ``indices``; returns ({index: rgb}, last decoded index).

    The first read of a file in a process decodes from the start and checks that frame timestamps
    match decode order; if they do, later reads seek (frame-exact), otherwise (e.g. packed B-frames
    in old AVIs) the file is always decoded in order.
    """
    with _lock:
        seekable = _seekable.get(path)
    if seekable:
        got, last, _ = _decode(path, indices, max_shorter, seek=True)
        missing = [i for i in indices if i not in got]
        if missing:   # a seek landed past a frame, or the header lies: decode in order
            got2, last, _ = _decode(path, missing, max_shorter, seek=False)
            got.update(got2)
    else:
        got, last, consistent = _decode(path, indices, max_shorter, seek=False)
        with _lock:
            _seekable[path] = consistent
    return got, last


def _decodable_count(path: str, last: int) -> tuple[int, int]:
    """``(true count, header count)`` of a file whose last decodable frame is ``last``.

    Raises :class:`BadSampleError` (and remembers why) when the file is truncated
    (:func:`truncation`); otherwise caches the true count and notes the first shortfall in
    :class:`BadSampleLog`.
    """
    true_n = last + 1
    if true_n <= 0:
        raise BadSampleError(path, "no decodable video frames (corrupt or truncated file)")
    header_n = probe_num_frames(path)
    why = truncation(header_n, true_n, probe_duration_frames(path))
    if why:
        with _lock:
            _truncated[path] = why
        raise BadSampleError(path, why)
    with _lock:
        known = _true_counts.get(path)
        _true_counts[path] = true_n
    if known is None:
        BadSampleLog.note(path, f"header says {header_n} frames but only {true_n} decode "
                          "(an edit list or a header that overstates the count); using the "
                          "decodable frames")
    return true_n, header_n


def _substitute_past_end(path: str, indices: list, missing: list, got: dict, last: int,
                         max_shorter) -> None:
    """Fill ``got[i]`` for the ``missing`` indices (past the last decodable frame) with the frame
    at ``i`` rescaled from the header's count onto the ``last + 1`` decodable ones."""
    true_n, header_n = _decodable_count(path, last)
    scale = true_n / max(header_n, max(indices) + 1)
    remap = {i: min(int(i * scale), true_n - 1) for i in missing}
    need = sorted(set(remap.values()) - set(got))
    if need:
        got3, _, _ = _decode(path, need, max_shorter, seek=False)
        got.update(got3)
    for i, j in remap.items():
        if j not in got:
            raise BadSampleError(path, f"frame {i} (or its substitute {j}) cannot be decoded")
        got[i] = got[j]


def iter_video_frames(path: str, max_shorter: int | None = None, stride: int = 1):
    """Yield every ``stride``-th decoded frame as uint8 RGB (for ``prepare_data``).

    Raises:
      BadSampleError: after the last frame, when far fewer frames decoded than the header says
        (:func:`truncation`), so ``prepare_data`` skips and names a truncated file.
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        header_n, decoded, duration_n = int(stream.frames or 0), 0, duration_frames(container)
        try:
            for i, frame in enumerate(container.decode(stream)):
                decoded = i + 1
                if i % stride == 0:
                    yield _to_rgb(frame, max_shorter)
        except (av.error.FFmpegError, ValueError, OSError) as e:
            BadSampleLog.note(path, f"decode stopped early: {type(e).__name__}: {e}")
        why = truncation(header_n, decoded, duration_n) if header_n > 0 else None
        if why:
            raise BadSampleError(path, why)
        if 0 < decoded < header_n:
            BadSampleLog.note(path, f"header says {header_n} frames but only {decoded} decode "
                              "(an edit list or a header that overstates the count); keeping them")
    finally:
        container.close()
