"""Which tf.data service workers are registered, and which of them no longer answer.

TensorFlow's Python API lists no workers, but the dispatcher's own gRPC service does:
``tensorflow.data.DispatcherService/GetWorkers`` (``dispatcher.proto``: "Reports a list of all
workers registered with the dispatcher"; every worker that registered since the dispatcher (or
its journal) started, lost ones included: TensorFlow 2.21 logs ``Lost worker HOST:PORT due to
timeout`` but keeps it in the list). :func:`list_workers` asks for it with ``grpcio`` (a
dependency of TensorFlow), decodes the reply with a two-message schema of our own (protobuf
parsing only: no code runs from it), and keeps each address only when it reads ``HOST:PORT``.
:func:`lost_workers` then probes every address with a bounded TCP connect
(:mod:`rnl_keras.tcp_probe`): a worker whose port accepts no connection is lost.

Every call here is bounded in time, and :func:`survey` runs the whole look-up in a daemon
thread with one overall bound, so a caller that is about to stop (the trainer's watchdog) can
never be held up by it; failures come back as text, never as exceptions.
"""
from __future__ import annotations

import re
import threading
import time

from rnl_keras.tcp_probe import wait_until_answering

GET_WORKERS = "/tensorflow.data.DispatcherService/GetWorkers"
MAX_REPLY_BYTES = 1 << 20          # a reply larger than this is refused, not parsed
MAX_WORKERS = 4096
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]{1,253}):([0-9]{1,5})$")


class ServiceWorkersError(RuntimeError):
    """The registered workers could not be learned (the message says why)."""


def _reply_class():
    """The ``GetWorkersResponse`` message class, built from a schema declared here (the field
    numbers of ``tensorflow/core/data/service/dispatcher.proto``) in a private pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    f = descriptor_pb2.FileDescriptorProto(name="rnl_keras_dispatcher_workers.proto",
                                           package="rnl_keras.dispatcher", syntax="proto3")
    info = f.message_type.add(name="WorkerInfo")
    info.field.add(name="address", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                   label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    info.field.add(name="id", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                   label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    reply = f.message_type.add(name="GetWorkersResponse")
    reply.field.add(name="workers", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                    label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
                    type_name=".rnl_keras.dispatcher.WorkerInfo")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("rnl_keras.dispatcher.GetWorkersResponse"))


def valid_address(address: str) -> bool:
    """True for ``HOST:PORT`` (host name, IPv4 or ``[IPv6]``; port 1..65535)."""
    m = _HOST_PORT.match(address)
    return bool(m) and 0 < int(m.group(2)) < 65536


def decode_workers(raw: bytes) -> list[str]:
    """The worker addresses of a serialised ``GetWorkersResponse``, in the dispatcher's order.

    Raises:
      ServiceWorkersError: the reply is too large, not a ``GetWorkersResponse``, lists too many
        workers, or an address is not ``HOST:PORT``.
    """
    if len(raw) > MAX_REPLY_BYTES:
        raise ServiceWorkersError(f"the GetWorkers reply has {len(raw)} bytes (at most "
                                  f"{MAX_REPLY_BYTES} expected)")
    from google.protobuf.message import DecodeError
    try:
        reply = _reply_class().FromString(bytes(raw))
    except (DecodeError, UnicodeDecodeError, ValueError) as err:
        raise ServiceWorkersError(f"the GetWorkers reply does not parse: {err}") from None
    if len(reply.workers) > MAX_WORKERS:
        raise ServiceWorkersError(f"the GetWorkers reply lists {len(reply.workers)} workers "
                                  f"(at most {MAX_WORKERS} expected)")
    addresses = [w.address for w in reply.workers]
    bad = [a for a in addresses if not valid_address(a)]
    if bad:
        raise ServiceWorkersError(f"the GetWorkers reply names {bad[0][:80]!r}, not HOST:PORT")
    return addresses


def dispatcher_target(address: str) -> str:
    """``[grpc://]HOST:PORT`` -> ``HOST:PORT`` (ServiceWorkersError when it is not that)."""
    rest = address[len("grpc://"):] if address.startswith("grpc://") else address
    if not valid_address(rest):
        raise ServiceWorkersError(f"{address!r} is not grpc://HOST:PORT")
    return rest


def list_workers(address: str, timeout_s: float = 3.0) -> list[str]:
    """Ask the dispatcher at ``address`` for its registered workers (one bounded RPC).

    Args:
      address: ``grpc://HOST:PORT`` (or ``HOST:PORT``) of the dispatcher.
      timeout_s: the RPC's deadline.
    Returns:
      The workers' ``HOST:PORT`` addresses, lost ones included.
    Raises:
      ServiceWorkersError: no answer in time, an RPC error, or a reply that does not parse.
    """
    target = dispatcher_target(address)
    try:
        import grpc
    except ImportError as err:
        raise ServiceWorkersError(f"grpcio is not importable ({err})") from None
    channel = grpc.insecure_channel(target, options=[
        ("grpc.max_receive_message_length", MAX_REPLY_BYTES)])
    try:
        call = channel.unary_unary(GET_WORKERS)   # bytes in, bytes out
        raw = call(b"", timeout=float(timeout_s))
    except grpc.RpcError as err:
        code = err.code() if hasattr(err, "code") else None
        detail = err.details() if hasattr(err, "details") else str(err)
        raise ServiceWorkersError(f"GetWorkers at {target} failed within {timeout_s:g} s "
                                  f"({getattr(code, 'name', code)}: {detail})") from None
    finally:
        channel.close()
    return decode_workers(raw)


def lost_workers(workers: list[str], timeout_s: float = 2.0) -> dict[str, OSError]:
    """The workers that accept no TCP connection within ``timeout_s`` (retried until then).

    Returns:
      ``{address: last connection error}`` of the workers that never answered.
    """
    targets = {}
    for address in workers:
        host, _, port = address.rpartition(":")
        targets[address] = (host.strip("[]"), int(port))
    return wait_until_answering(targets, timeout_s, interval_s=0.5)


def survey(address: str, rpc_timeout_s: float = 3.0, probe_timeout_s: float = 2.0) -> dict:
    """Registered and lost workers of the dispatcher at ``address``, bounded overall.

    Runs :func:`list_workers` and :func:`lost_workers` in a daemon thread and waits at most
    ``rpc_timeout_s + probe_timeout_s + 2`` seconds for them.

    Returns:
      ``{"workers": [addresses], "lost": {address: error text}}``, or ``{"error": why}`` when
      the workers could not be learned (never raises).
    """
    result: dict = {}

    def run():
        try:
            workers = list_workers(address, rpc_timeout_s)
            lost = lost_workers(workers, probe_timeout_s)
            result.update(workers=workers, lost={a: f"{type(e).__name__}: {e}"
                                                 for a, e in lost.items()})
        except Exception as err:  # noqa: BLE001 - fail soft: the caller reports the reason
            result["error"] = str(err) if isinstance(err, ServiceWorkersError) else \
                f"{type(err).__name__}: {err}"
    bound = rpc_timeout_s + probe_timeout_s + 2.0
    thread = threading.Thread(target=run, name="rnl-service-workers", daemon=True)
    t0 = time.monotonic()
    thread.start()
    thread.join(bound)
    if thread.is_alive() or not result:
        return {"error": f"no answer about the workers within {time.monotonic() - t0:.0f} s"}
    return dict(result)
