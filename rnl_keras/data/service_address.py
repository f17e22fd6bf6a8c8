"""Parse and probe the ``--data_service`` address (``grpc://HOST:PORT``) with a bounded wait.

TensorFlow's data service client retries an unreachable dispatcher for a long time without a
word; probing the TCP port first turns "nothing listening" into a prompt, clear error.
"""
from __future__ import annotations

from rnl_keras.tcp_probe import wait_until_answering


class DataServiceAddressError(ValueError):
    """The ``--data_service`` address is malformed or nothing answers there."""


def parse_service_address(address: str) -> tuple[str, int]:
    """``"grpc://HOST:PORT"`` -> ``(HOST, PORT)``.

    Raises:
      DataServiceAddressError: naming the flag and the expected form.
    """
    rest = address[len("grpc://"):] if address.startswith("grpc://") else None
    host, _, port = (rest or "").rpartition(":")
    if not rest or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DataServiceAddressError(
            f"--data_service={address!r}: expected grpc://HOST:PORT (the dispatcher started by "
            "'python pipelines/data_service.py dispatcher --port=PORT')")
    return host.strip("[]"), int(port)


def check_service_address(address: str, timeout_s: float = 10.0) -> None:
    """Raise DataServiceAddressError unless a TCP connection to the dispatcher opens in time.

    Args:
      address: ``grpc://HOST:PORT``.
      timeout_s: total time allowed (refused connections are retried until then: a dispatcher
        that is just starting gets the chance to listen).
    """
    host, port = parse_service_address(address)
    failed = wait_until_answering({"dispatcher": (host, port)}, timeout_s, interval_s=0.5)
    if not failed:
        return
    last = failed["dispatcher"]
    raise DataServiceAddressError(
        f"--data_service={address}: no tf.data service dispatcher answers at {host}:{port} "
        f"within {timeout_s:g} s ({type(last).__name__}: {last}); start one with 'python "
        f"pipelines/data_service.py dispatcher --port={port}' on {host}, or fix the address")
