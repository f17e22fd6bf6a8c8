"""Ending a training process promptly: any error, Ctrl-C, SIGTERM or a missing peer.

Why the process ends with ``os._exit``: after an error inside a ``tf.data`` pipeline that decodes
video with PyAV (a ``py_function``), the interpreter's normal shutdown can block for ever while
TensorFlow tears the pipeline down (0 % CPU, no exit status for a scheduler or CI to see). So
``pipelines/train.py`` catches everything (``BaseException``), prints the traceback and then ONE
line naming the cause and where it happened (the clip, the epoch and step), flushes its output,
and leaves with :func:`hard_exit`, which no interpreter or TensorFlow teardown can block.

Exit codes: 0 done, 1 any error (bad flags, a peer that stopped answering...), 128 + the signal
number after SIGINT (130) or SIGTERM (143).

Signals (:class:`StopSignals`). SIGINT and SIGTERM set a flag that the training loop reads after
every step; it then saves a checkpoint (the state is consistent between steps) and raises
:class:`TrainingStopped`. Multi-worker runs agree on the flag in the small all-reduce before each
step (``rnl_keras.training.collectives.make_step_gate``), so every worker saves the same step and
stops (TensorFlow's own SIGTERM handler, installed by the multi-worker strategy, only records the
signal and keeps training: it is replaced). Outside the
training loop (building the model, restoring) a signal ends the process at once. A second signal,
or a loop that does not reach the next step within ``grace_s``, ends it at once too. The signal is
seen by a helper thread through :func:`signal.set_wakeup_fd`, so this works while the main thread
is blocked inside a TensorFlow op.

Bounded waits (:class:`Deadline`). A multi-worker process arms a deadline around every phase that
waits for its peers (starting the cluster, each step, saving, summing validation); when it expires
the process ends naming the peers' addresses from ``TF_CONFIG`` (see ``--peer_timeout_s``).
"""
from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
import traceback

EXIT_ERROR = 1
_exit_lock = threading.Lock()
_at_exit = []


def at_hard_exit(fn) -> None:
    """Call ``fn()`` (best effort, errors ignored) before :func:`hard_exit` ends the process."""
    _at_exit.append(fn)


class TrainingStopped(Exception):
    """Training stopped on request (a signal here or on a peer worker) after saving.

    Attributes:
      signum: the signal (SIGINT or SIGTERM); the exit code is ``128 + signum``.
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


def signal_name(signum: int) -> str:
    """``"SIGINT"`` for 2 and so on (``"signal <n>"`` for an unknown number)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(exc: BaseException) -> int:
    """The process exit status for an exception that ended training."""
    if isinstance(exc, TrainingStopped):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    if isinstance(exc, SystemExit):
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_ERROR)
    return EXIT_ERROR


# "module.SomeError: message" lines inside a TensorFlow error (a py_function's traceback).
_PY_ERROR_LINE = re.compile(r"^\s*(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit)): "
                            r"(.+?)\s*$")


# Header and traceback lines of a TensorFlow op error that say nothing about the cause.
_NOISE = re.compile(r"^(Graph execution error:|Detected at node|File \"|\^|\[\[|in user code:|"
                    r"Additional GRPC error information|:UNKNOWN:|The error could be from)")


def describe(exc: BaseException, limit: int = 400) -> str:
    """One line naming what went wrong.

    TensorFlow op errors carry the traceback of the Python error inside them (a ``py_function``
    of the input pipeline): the innermost ``<Type>: <message>`` line is used, e.g.
    ``BadSampleError: bad sample <clip>: <reason>``; so for messages that start with a header
    line (autograph's ``in user code:``). Otherwise ``<Type>: <first line>``.
    """
    if isinstance(exc, (TrainingStopped, FloatingPointError)):
        return str(exc)
    text = str(getattr(exc, "message", None) or exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    found = None
    tf = sys.modules.get("tensorflow")   # not imported here: describing must never fail
    try:
        nested = tf is not None and isinstance(exc, tf.errors.OpError)
    except AttributeError:
        nested = False
    if nested or (lines and lines[0].endswith(":")):
        for line in lines:
            match = _PY_ERROR_LINE.match(line)
            if match:
                found = f"{match[1]}: {match[2]}"   # keep the last (innermost) one
    if found is None and nested:   # e.g. a collective aborted because a peer went away
        useful = [ln for ln in lines if not _NOISE.match(ln)]
        if useful:
            found = f"{type(exc).__name__}: {useful[0]}"
            if useful[0].endswith(":") and len(useful) > 1:   # "...tasks are unhealthy:" <tasks>
                found += " " + useful[1]
    if found is None:
        found = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return found if len(found) <= limit else found[:limit - 3] + "..."


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    try:
        from absl import logging as absl_logging
        absl_logging.flush()
    except Exception:  # noqa: BLE001
        pass


def hard_exit(code: int, line: str | None = None, tb: str | None = None):
    """Print ``tb`` and ``line`` to stderr, flush, and end the process with ``os._exit(code)``.

    Only the first caller prints (a watchdog thread and the main thread may race); a stuck flush
    cannot keep the process alive longer than a few seconds.
    """
    timer = threading.Timer(10.0, os._exit, args=(code,))
    timer.daemon = True
    timer.start()
    with _exit_lock:
        try:
            if tb:
                sys.stderr.write(tb if tb.endswith("\n") else tb + "\n")
            if line:
                sys.stderr.write(line + "\n")
        finally:
            for fn in _at_exit:
                try:
                    fn()
                except Exception:  # noqa: BLE001
                    pass
            _flush_all()
            os._exit(code)


# TensorFlow errors that mean "a peer went away" in a multi-worker run.
_PEER_ERRORS = ("UnavailableError", "AbortedError", "DeadlineExceededError", "CancelledError")


def exit_on_exception(exc: BaseException, prog: str, where: str | None, peers=()) -> None:
    """End the process for ``exc``: traceback, then one line ``<prog>: <cause> (<where>)``.

    ``peers``: the other workers (``"worker 1 at host:port"``), named when the error says that
    a peer went away.
    """
    code = exit_code(exc)
    tb = None
    if not isinstance(exc, (TrainingStopped, KeyboardInterrupt, SystemExit)):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    cause = describe(exc)
    if peers and type(exc).__name__ in _PEER_ERRORS:
        cause += f" [peers: {', '.join(peers)}]"
    if isinstance(exc, KeyboardInterrupt):
        cause = "interrupted (SIGINT)"
    context = f" [while {where}]" if where and not isinstance(exc, TrainingStopped) else ""
    verb = "stopped" if code >= 128 else "FAILED"
    hard_exit(code, f"{prog}: {verb}{context}: {cause} (exit {code})", tb)


def _text(message) -> str:
    """``message``, or what it returns when it is a function (never raises: a failing one is
    named instead, the process ends anyway)."""
    if not callable(message):
        return message
    try:
        return message()
    except Exception as err:  # noqa: BLE001 - the watchdog must still end the process
        return f"(the message could not be built: {describe(err)})"


class Deadline:
    """One watchdog thread: :meth:`arm` a limit and a message (or a function building it),
    :meth:`disarm` when done.

    When an armed limit passes the process ends (:func:`hard_exit`, status 1) with the message.
    """

    def __init__(self, prog: str = "train.py"):
        self._prog = prog
        self._cond = threading.Condition()
        self._until = None
        self._message = ""
        self._started = None
        self._thread = threading.Thread(target=self._watch, name="rnl-deadline", daemon=True)
        self._thread.start()

    def arm(self, seconds: float, message) -> None:
        """End the process with ``message`` unless :meth:`disarm` comes within ``seconds``.

        Args:
          seconds: the limit.
          message: the text, or a function returning it, called only when the limit passes
            (e.g. one that asks a tf.data service dispatcher which worker was lost).
        """
        with self._cond:
            self._started = time.monotonic()
            self._until = self._started + seconds
            self._message = message
            self._cond.notify()

    def disarm(self) -> None:
        """Cancel the armed limit (no-op when none)."""
        with self._cond:
            self._until = None

    def _watch(self) -> None:
        while True:
            with self._cond:
                while self._until is None or time.monotonic() < self._until:
                    wait = None if self._until is None else self._until - time.monotonic()
                    self._cond.wait(timeout=wait)
                waited = time.monotonic() - self._started
                message = self._message
            hard_exit(EXIT_ERROR, f"{self._prog}: FAILED: no progress for {waited:.0f} s "
                      f"{_text(message)}")


class StopSignals:
    """SIGINT / SIGTERM for the training loop (see the module docstring).

    Args:
      grace_s: after a signal, how long the loop may take to reach the next step (and save)
        before the process ends anyway.
      prog: the program name for the messages.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, grace_s: float = 120.0, prog: str = "train.py"):
        self.grace_s = grace_s
        self.prog = prog
        self.requested: int | None = None
        self.deferred = False          # True inside the training loop (it saves, then stops)
        self.where = lambda: None      # what the process is doing, for the messages
        self.peers = ()                # the other workers, for the messages
        self._read_fd = None
        self._seen = 0
        self._ignored = None

    def install(self) -> None:
        """(Re)install the handlers; call again after TensorFlow installed its own (multi-worker
        strategy). Must run in the main thread. A signal the process was started with ignored
        (e.g. SIGINT of a background job of a shell script) stays ignored."""
        if self._ignored is None:
            self._ignored = {s for s in self.SIGNALS if signal.getsignal(s) == signal.SIG_IGN}
        for signum in self.SIGNALS:
            if signum not in self._ignored:
                signal.signal(signum, self._handler)
        if self._read_fd is None:
            read_fd, write_fd = os.pipe()
            os.set_blocking(write_fd, False)
            self._read_fd = read_fd
            signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
            threading.Thread(target=self._watch, name="rnl-signals", daemon=True).start()

    def _handler(self, signum, frame) -> None:   # runs in the main thread, between bytecodes
        if self.requested is None:
            self.requested = signum

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except OSError:
                return
            for signum in data:
                if signum in self.SIGNALS:
                    self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        self._seen += 1
        where = self.where()
        context = f" [while {where}]" if where else ""
        name = signal_name(signum)
        if not self.deferred or self._seen > 1:
            hard_exit(128 + signum, f"{self.prog}: stopped{context}: {name} received "
                      f"(exit {128 + signum})")
        print(f"{self.prog}: {name} received{context}: saving a checkpoint at the end of this "
              f"step, then stopping (a second {name} stops at once)", file=sys.stderr, flush=True)
        timer = threading.Timer(self.grace_s, lambda: hard_exit(
            128 + signum, f"{self.prog}: stopped: {name} received and the training loop did not "
            f"reach the end of a step within {self.grace_s:.0f} s; no checkpoint saved now "
            f"(exit {128 + signum})"))
        timer.daemon = True
        timer.start()


class NoStop:
    """Stand-in for :class:`StopSignals` when the Trainer runs inside another program (tests)."""

    requested = None
    deferred = False

    def install(self) -> None:
        """Nothing to install."""
