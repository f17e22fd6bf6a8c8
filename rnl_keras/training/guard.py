"""What the training loop is doing, bounded waits for peers, and agreed stops.

The :class:`~rnl_keras.training.loop.Trainer` tells its :class:`RunGuard` each phase ("epoch 2
step 7", "saving the checkpoint at global step 40", ...): error messages name it, and in a
multi-worker run every phase that waits for the peers is bounded by ``--peer_timeout_s`` (the
process then ends naming the peers' addresses, see :mod:`rnl_keras.training.failures`).

Stop requests (SIGINT / SIGTERM, :class:`~rnl_keras.training.failures.StopSignals`) are encoded
as a number that the step gate sums over all replicas of all workers (:meth:`RunGuard.code`,
:func:`rnl_keras.training.collectives.make_step_gate`),
so every worker sees the same decision after the same step and they save the same checkpoint.
"""
from __future__ import annotations

import contextlib
import signal

from rnl_keras.training.failures import Deadline, NoStop, TrainingStopped, signal_name

_SIGTERM_CODE = 1000.0   # one replica's SIGTERM outweighs SIGINTs on every replica


class RunGuard:
    """Phases, peer deadlines and stop decisions of one training process.

    Args:
      stop: a :class:`~rnl_keras.training.failures.StopSignals` (or None: never stop).
      peer_timeout_s: the bound on a phase that waits for peers (multi-worker only).
      peers: the other tasks' descriptions (``"worker 1 at host:port"``); empty: one process.
    """

    def __init__(self, stop=None, peer_timeout_s: float = 600.0, peers=()):
        self.stop = stop or NoStop()
        self.timeout = float(peer_timeout_s)
        self.peers = list(peers)
        self.where = "starting"
        self._deadline = Deadline() if self.peers else None
        self.stop.where = lambda: self.where   # the signal and error messages name the phase
        self.stop.peers = self.peers

    # ------------------------------------------------------------------------------- phases
    def begin(self, where: str, collective: bool = False) -> None:
        """Enter a phase; ``collective``: it waits for the peers (bounded when there are any)."""
        self.where = where
        if collective and self._deadline is not None:
            self._deadline.arm(self.timeout, (
                f"while {where}: waiting for {', '.join(self.peers)} (not started, stopped or "
                f"unreachable?); bounded by --peer_timeout_s={self.timeout:g}"))

    def end(self) -> None:
        """Leave a collective phase (disarms the peer deadline)."""
        if self._deadline is not None:
            self._deadline.disarm()

    @contextlib.contextmanager
    def phase(self, where: str, collective: bool = False):
        """``with guard.phase(...)``: :meth:`begin` ... :meth:`end`, restoring the outer phase."""
        outer = self.where
        self.begin(where, collective)
        try:
            yield
        finally:
            self.end()
            self.where = outer

    # --------------------------------------------------------------------------------- stops
    def training(self, active: bool) -> None:
        """Inside the loop a signal is handled at the next step boundary (save, then stop);
        outside it ends the process at once."""
        self.stop.deferred = active

    def code(self) -> float:
        """This process's stop request as a number to sum over replicas (0: none)."""
        requested = self.stop.requested
        if requested is None:
            return 0.0
        return _SIGTERM_CODE if requested == signal.SIGTERM else 1.0

    @staticmethod
    def signum(total: float) -> int | None:
        """The signal a summed :meth:`code` stands for (None: nobody asked to stop)."""
        if total >= _SIGTERM_CODE:
            return int(signal.SIGTERM)
        return int(signal.SIGINT) if total > 0 else None

    def stopped(self, signum: int, saved: str | None) -> TrainingStopped:
        """The exception that ends training after a stop request (raise it)."""
        own = self.stop.requested is not None
        source = "received" if own else "received by another worker"
        what = f"checkpoint saved: {saved}" if saved else "no checkpoint saved"
        return TrainingStopped(signum, f"{signal_name(signum)} {source} during {self.where}; "
                               f"{what}")
