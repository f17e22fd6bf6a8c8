"""A bounded wait for the other workers of a ``TF_CONFIG`` cluster, before TensorFlow starts it.

``tf.distribute.MultiWorkerMirroredStrategy()`` waits for every task inside one C++ call that
holds the Python GIL: a worker whose peer never starts waits silently for ever, and no Python
thread can even time it out. So before creating the strategy each worker listens on its own
address (the port TensorFlow will use a moment later) and connects to every peer's address until
all answer, for at most ``timeout_s`` seconds; a peer that never answers ends the wait with an
error naming its address. A peer that already started TensorFlow's server answers too (any TCP
accept counts), so workers may start in any order.
"""
from __future__ import annotations

import socket
import threading

from rnl_keras.tcp_probe import wait_until_answering


class PeerTimeoutError(RuntimeError):
    """Some peers did not answer within the timeout; the message names their addresses."""


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "localhost", int(port)


class _Listener:
    """Accepts (and drains) connections on this task's port until closed."""

    def __init__(self, address: str):
        _, port = _split(address)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(("", port))
        except OSError as err:
            self.sock.close()
            raise PeerTimeoutError(f"cannot listen on this worker's own address {address} "
                                   f"(TF_CONFIG): {err.strerror or err}") from None
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="rnl-rendezvous", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            # Let the peer close first, so the TIME_WAIT state stays on its side of the port.
            conn.settimeout(2.0)
            try:
                conn.recv(1)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        """Stop accepting and free the port (TensorFlow's server binds it next)."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.sock.close()


def wait_for_peers(own: str, peers: dict[str, str], timeout_s: float) -> None:
    """Wait until every peer address accepts a connection.

    Args:
      own: this task's ``host:port`` (listened on meanwhile, so that the peers see this task).
      peers: description (``"worker 1"``) -> ``host:port`` of every other task.
      timeout_s: the bound on the wait.
    Raises:
      PeerTimeoutError: naming every peer that did not answer and the timeout.
    """
    listener = _Listener(own)
    try:
        missing = wait_until_answering({name: _split(addr) for name, addr in peers.items()},
                                       timeout_s)
        if missing:
            names = ", ".join(f"{name} at {peers[name]}" for name in missing)
            raise PeerTimeoutError(
                f"no answer within {timeout_s:g} s (--peer_timeout_s) from {names} "
                f"(TF_CONFIG): is it running and reachable from this worker?")
    finally:
        listener.close()
