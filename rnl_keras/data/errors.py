"""Error types and the process-wide log of skipped (bad) samples.

List-file problems (malformed lines, labels out of range) are found before training starts and raised
together as one :class:`ListFileError`. Per-sample decode problems (missing, empty, corrupt or truncated
files, unreadable JPEGs, ...) raise :class:`BadSampleError` inside the loaders; the pipeline either drops
the sample and records it in :class:`BadSampleLog` (``on_bad_sample="skip"``) or re-raises
(``on_bad_sample="raise"``).
"""
from __future__ import annotations

import threading

from absl import logging


class ListFileError(ValueError):
    """A list file has problems; ``problems`` holds every ``"<list file>:<line>: <reason>"`` string."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in list file:\n" + "\n".join(self.problems))


class DamagedShardError(ListFileError):
    """TFRecord shards that no longer match their manifests (cut short, truncated, changed), found
    when the shards are opened with ``on_bad_sample="raise"``; ``problems`` names each shard."""

    def __init__(self, problems: list[str]):
        super().__init__(problems)
        self.args = (f"{len(self.problems)} damaged TFRecord shard(s) (cut short or changed since "
                     "prepare_data.py wrote them; rerun it to rewrite them):\n"
                     + "\n".join(self.problems),)


class BadSampleError(RuntimeError):
    """One sample cannot be decoded. The message always names the path and the reason."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"bad sample {path}: {reason}")


class BadSampleLog:
    """Process-wide, thread-safe record of skipped samples (tf.data runs loaders on many threads).

    Each skip is also logged with ``absl.logging.warning`` naming the path and the reason.
    Recovered problems (e.g. a header that overstates the frame count) are kept apart in
    :meth:`notes` and are not counted as skips.
    """

    _lock = threading.Lock()
    _messages: list[str] = []
    _notes: list[str] = []
    _count = 0

    @classmethod
    def _log(cls, bucket: list, msg: str, count: int = 0) -> str:
        with cls._lock:
            bucket.append(msg)
            cls._count += count
        logging.warning(msg)
        return msg

    @classmethod
    def record(cls, path: str, reason: str, count: int = 1) -> str:
        """Record skipped samples of one file and log them; returns the message.

        Args:
          path: the file the samples came from (a video, a frame, a TFRecord shard).
          reason: why they were skipped.
          count: how many samples were lost (a cut-short shard loses several records at once).
        """
        count = int(count)
        what = "bad sample" if count == 1 else f"{count} bad samples of"
        return cls._log(cls._messages, f"skipped {what} {path}: {reason}", count)

    @classmethod
    def note(cls, path: str, reason: str) -> str:
        """Record (and log) a problem that was worked around; the sample was still used."""
        return cls._log(cls._notes, f"{path}: {reason}")

    @classmethod
    def count(cls) -> int:
        """Number of samples skipped since the last :meth:`reset`."""
        with cls._lock:
            return cls._count

    @classmethod
    def messages(cls) -> list[str]:
        """Messages of the samples skipped since the last :meth:`reset` (oldest first)."""
        with cls._lock:
            return list(cls._messages)

    @classmethod
    def notes(cls) -> list[str]:
        """Messages of recovered problems since the last :meth:`reset`."""
        with cls._lock:
            return list(cls._notes)

    @classmethod
    def reset(cls) -> None:
        """Forget all recorded skips and notes."""
        with cls._lock:
            cls._messages.clear()
            cls._notes.clear()
            cls._count = 0


def report_bad_samples(epoch: int | None = None, since: int = 0) -> str:
    """Log (and return) the end-of-epoch summary of skipped samples; for custom training loops."""
    total = BadSampleLog.count()
    where = f"epoch {epoch}: " if epoch is not None else ""
    msg = f"{where}{total - since} bad sample(s) skipped this epoch, {total} in total"
    if total:
        logging.warning(msg)
    else:
        logging.info(msg)
    return msg
