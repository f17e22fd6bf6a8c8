"""TF Serving client side: build REST / gRPC Predict requests, send them, parse the responses.

REST (``POST http://host:port/v1/models/<name>[/versions/<v>]:predict``) bodies use either the row
format ``{"signature_name": ..., "instances": [clip, ...]}`` or the columnar format
``{"signature_name": ..., "inputs": {"frames": [clip, ...]}}``. gRPC uses
``tensorflow_serving.apis.predict_pb2.PredictRequest`` with ``tf.make_tensor_proto`` inputs and
``prediction_service_pb2_grpc.PredictionServiceStub.Predict``.

There is no model server in this repository's environment, so the ``*_to_inputs`` and
``outputs_to_*_response`` functions emulate the server's side (decode a request against a loaded
signature's ``structured_input_signature``, encode its outputs the way TF Serving does). Tests and
``serving_client.py --local_saved_model`` use them to run a request end to end in-process.
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import numpy as np

DEFAULT_INPUT_NAMES = {"serving_default": "frames", "serving_float": "clip",
                       "preprocess": "frames"}


class ServingError(RuntimeError):
    """The server could not be reached, or rejected / answered the request unexpectedly."""


class RequestMismatch(ValueError):
    """A request's inputs do not match the signature (names, dtypes or shapes)."""


# ----------------------------------------------------------------------------- REST


def rest_url(server: str, model_name: str, version: int | None = None) -> str:
    base = server if server.startswith(("http://", "https://")) else f"http://{server}"
    path = f"/v1/models/{model_name}" + (f"/versions/{int(version)}" if version else "")
    return base.rstrip("/") + path + ":predict"


def build_rest_body(clips: np.ndarray, signature_name: str = "serving_default",
                    input_name: str = "frames", fmt: str = "instances") -> dict:
    """JSON body for a batch ``clips`` (B, ...): row (``instances``) or columnar (``inputs``)."""
    clips = np.asarray(clips)
    if fmt == "instances":
        return {"signature_name": signature_name,
                "instances": [{input_name: clip.tolist()} for clip in clips]}
    if fmt == "inputs":
        return {"signature_name": signature_name, "inputs": {input_name: clips.tolist()}}
    raise ValueError(f"fmt must be 'instances' or 'inputs', got {fmt!r}")


def send_rest(url: str, body: dict, timeout: float = 60.0) -> dict:
    data = json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")[:500]
        raise ServingError(f"POST {url}: HTTP {e.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        raise ServingError(f"POST {url}: cannot reach the server: {e}") from None
    except ValueError as e:
        raise ServingError(f"POST {url}: response is not JSON: {e}") from None


def _decode_json_value(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode_json_value(v) for v in value]
    return value


def parse_rest_response(resp: dict) -> dict:
    """``{"predictions": ...}`` or ``{"outputs": ...}`` -> ``{output name: np.ndarray (B, ...)}``."""
    if "error" in resp:
        raise ServingError(f"server error: {resp['error']}")
    if "predictions" in resp:
        preds = resp["predictions"]
        if preds and isinstance(preds[0], dict):
            keys = preds[0].keys()
            return {k: np.asarray([_decode_json_value(p[k]) for p in preds]) for k in keys}
        return {"probabilities": np.asarray(preds)}
    if "outputs" in resp:
        outs = resp["outputs"]
        if isinstance(outs, dict):
            return {k: np.asarray(_decode_json_value(v)) for k, v in outs.items()}
        return {"probabilities": np.asarray(outs)}
    raise ServingError(f"unexpected REST response keys {sorted(resp)}")


# ----------------------------------------------------------------------------- gRPC


def build_grpc_request(clips: np.ndarray, model_name: str, signature_name: str = "serving_default",
                       input_name: str = "frames", version: int | None = None):
    """A ``PredictRequest`` with one input tensor (dtype from the array: uint8 or float32)."""
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow_serving.apis import predict_pb2  # noqa: PLC0415
    clips = np.asarray(clips)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version:
        request.model_spec.version.value = int(version)
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(clips, dtype=tf.as_dtype(clips.dtype),
                                                             shape=clips.shape))
    return request


def send_grpc(server: str, request, timeout: float = 60.0):
    import grpc  # noqa: PLC0415
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: PLC0415
    size = request.ByteSize()
    options = [("grpc.max_send_message_length", max(size + 1024, 4 << 20)),
               ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(server, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            return stub.Predict(request, timeout=timeout)
        except grpc.RpcError as e:
            raise ServingError(f"gRPC Predict to {server}: {e.code().name}: {e.details()}") from None


def parse_grpc_response(response) -> dict:
    import tensorflow as tf  # noqa: PLC0415
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


# ----------------------------------------------------------------------------- results


def top_k_from_outputs(outputs: dict, k: int = 5, labels=None) -> list[list[tuple[int, str, float]]]:
    """Per example ``[(index, name, score)]``: from ``top_k_*`` outputs, else from probabilities."""
    def text(x):
        return x.decode("utf-8") if isinstance(x, (bytes, np.bytes_)) else str(x)

    results = []
    if "top_k_indices" in outputs and "top_k_scores" in outputs:
        idx = np.asarray(outputs["top_k_indices"])
        scores = np.asarray(outputs["top_k_scores"], np.float64)
        names = np.asarray(outputs["top_k_labels"], dtype=object) if "top_k_labels" in outputs else None
        for b in range(idx.shape[0]):
            row = []
            for j in range(min(k, idx.shape[1])):
                i = int(idx[b, j])
                name = text(names[b, j]) if names is not None else (
                    labels[i] if labels is not None and i < len(labels) else str(i))
                row.append((i, name, float(scores[b, j])))
            results.append(row)
        return results
    probs = np.asarray(outputs["probabilities"], np.float64)
    for p in probs:
        order = np.lexsort((np.arange(p.size), -p))[:k]
        results.append([(int(i), labels[i] if labels is not None and i < len(labels) else str(int(i)),
                         float(p[i])) for i in order])
    return results


# ----------------------------------------------------------------------------- server emulation


def _check_inputs(feeds: dict, signature) -> dict:
    """Cast / check ``{name: array}`` against a concrete function's input signature."""
    import tensorflow as tf  # noqa: PLC0415
    _, specs = signature.structured_input_signature
    if set(feeds) != set(specs):
        raise RequestMismatch(f"request inputs {sorted(feeds)} != signature inputs {sorted(specs)}")
    out = {}
    for name, spec in specs.items():
        value = np.asarray(feeds[name])
        if value.dtype == object or value.dtype.kind in "OUS":
            raise RequestMismatch(f"input {name!r}: not a numeric array")
        if not spec.shape.is_compatible_with(value.shape):
            raise RequestMismatch(f"input {name!r}: shape {value.shape} incompatible with "
                                  f"{spec.shape}")
        # TF Serving converts JSON numbers to the signature dtype; integers out of range fail.
        if spec.dtype.is_integer and value.dtype.kind == "f":
            raise RequestMismatch(f"input {name!r}: floats for an {spec.dtype.name} input")
        if spec.dtype.is_integer and value.size and (value.min() < spec.dtype.min or
                                                     value.max() > spec.dtype.max):
            raise RequestMismatch(f"input {name!r}: values outside {spec.dtype.name} range")
        out[name] = tf.constant(value.astype(spec.dtype.as_numpy_dtype))
    return out


def rest_body_to_inputs(body, signature) -> dict:
    """Decode a REST body (dict or JSON text) the way TF Serving does, for ``signature``."""
    if isinstance(body, (str, bytes)):
        body = json.loads(body)
    if "instances" in body:
        instances = body["instances"]
        if not instances:
            raise RequestMismatch("empty 'instances'")
        if isinstance(instances[0], dict):
            names = instances[0].keys()
            feeds = {n: np.asarray([inst[n] for inst in instances]) for n in names}
        else:
            _, specs = signature.structured_input_signature
            if len(specs) != 1:
                raise RequestMismatch("bare instances need a single-input signature")
            feeds = {next(iter(specs)): np.asarray(instances)}
    elif "inputs" in body:
        inputs = body["inputs"]
        if isinstance(inputs, dict):
            feeds = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            _, specs = signature.structured_input_signature
            feeds = {next(iter(specs)): np.asarray(inputs)}
    else:
        raise RequestMismatch(f"REST body has neither 'instances' nor 'inputs': {sorted(body)}")
    return _check_inputs(feeds, signature)


def grpc_request_to_inputs(request, signature) -> dict:
    """Decode a ``PredictRequest``'s tensor protos (``tf.make_ndarray``) for ``signature``."""
    import tensorflow as tf  # noqa: PLC0415
    _, specs = signature.structured_input_signature
    feeds = {}
    for name, proto in request.inputs.items():
        spec = specs.get(name)
        if spec is not None and tf.as_dtype(proto.dtype) != spec.dtype:
            raise RequestMismatch(f"input {name!r}: dtype {tf.as_dtype(proto.dtype).name}, "
                                  f"signature wants {spec.dtype.name}")
        feeds[name] = tf.make_ndarray(proto)
    return _check_inputs(feeds, signature)


def _json_value(x):
    if isinstance(x, np.ndarray):
        return [_json_value(v) for v in x] if x.dtype == object or x.dtype.kind == "S" else x.tolist()
    if isinstance(x, (bytes, np.bytes_)):
        return x.decode("utf-8")
    return x.tolist() if hasattr(x, "tolist") else x


def outputs_to_rest_response(outputs: dict, fmt: str = "instances") -> dict:
    """Encode signature outputs as TF Serving's REST answer (row or columnar)."""
    arrays = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in outputs.items()}
    if fmt == "instances":
        batch = len(next(iter(arrays.values())))
        return {"predictions": [{k: _json_value(v[b]) for k, v in arrays.items()}
                                for b in range(batch)]}
    return {"outputs": {k: _json_value(v) for k, v in arrays.items()}}


def outputs_to_grpc_response(outputs: dict, model_name: str = "", signature_name: str = ""):
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow_serving.apis import predict_pb2  # noqa: PLC0415
    response = predict_pb2.PredictResponse()
    response.model_spec.name = model_name
    response.model_spec.signature_name = signature_name
    for k, v in outputs.items():
        response.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy() if hasattr(v, "numpy") else v))
    return response
