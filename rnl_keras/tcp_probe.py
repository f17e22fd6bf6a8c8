"""Bounded waits for TCP addresses to accept a connection (peers of a cluster, a dispatcher).

TensorFlow's own clients wait for an unreachable server for a very long time without a word; the
trainer and the data-service client probe the address first, so that "nothing listening" becomes
a prompt error naming it. Any TCP accept counts as an answer.
"""
from __future__ import annotations

import socket
import time


def connect_error(host: str, port: int, timeout_s: float = 1.0) -> OSError | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout_s``, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as err:
        return err


def wait_until_answering(addresses: dict, timeout_s: float, interval_s: float = 0.25) -> dict:
    """Probe every address until all answer or ``timeout_s`` has passed.

    Args:
      addresses: name -> ``(host, port)``.
      timeout_s: the bound on the whole wait (each probe is bounded by what is left, at most 1 s).
      interval_s: pause between rounds of probes.
    Returns:
      name -> the last connection error of each address that never answered (empty: all did).
    """
    pending, failed = dict(addresses), {}
    deadline = time.monotonic() + float(timeout_s)
    while pending:
        left = deadline - time.monotonic()
        failed = {name: err for name, err in
                  ((name, connect_error(*hp, timeout_s=max(0.1, min(left, 1.0))))
                   for name, hp in pending.items()) if err is not None}
        pending = {name: pending[name] for name in failed}
        if not pending or time.monotonic() + interval_s >= deadline:
            break
        time.sleep(interval_s)
    return failed
