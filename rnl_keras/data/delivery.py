"""Which clips the trainer received from the tf.data service (process-wide, thread-safe).

With local input the trainer knows what it read; with the service the clips come from other
processes, so the trainer notes each delivered clip's ``video_index`` (its position in the list
``prepare_data.py`` read). The trainer compares the count with the pass it expected (clips
lost with a worker show up as a shortfall) and tests check that a pass delivers every clip once.
"""
from __future__ import annotations

import collections
import threading


class DeliveryLog:
    """Counts of delivered ``video_index`` values since the last :meth:`reset`."""

    _lock = threading.Lock()
    _counts: collections.Counter = collections.Counter()

    @classmethod
    def add(cls, indices) -> None:
        """Note delivered clips (an iterable of ints)."""
        with cls._lock:
            cls._counts.update(int(i) for i in indices)

    @classmethod
    def counts(cls) -> dict[int, int]:
        """``{video_index: times delivered}``."""
        with cls._lock:
            return dict(cls._counts)

    @classmethod
    def total(cls) -> int:
        """Clips delivered (with repeats)."""
        with cls._lock:
            return sum(cls._counts.values())

    @classmethod
    def reset(cls) -> None:
        """Forget every delivery (call at the start of a pass)."""
        with cls._lock:
            cls._counts.clear()
