"""TF Serving requests built by the client feed the exported signatures and give the same top-k.

No model server exists here: requests are decoded against the loaded signature the way TF Serving
does (names, dtypes, shapes checked against ``structured_input_signature``), run, and the outputs
encoded back as the server would. The transport code runs against in-test HTTP and gRPC servers.
"""
import json
import os
import subprocess
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import tensorflow as tf

from rnl_keras.export import serving
from tests.export.helpers import LABELS, REPO, S, T, VIDEOS


@pytest.fixture(scope="module")
def frames(video_clips):
    return np.ascontiguousarray(video_clips[1][None])   # (1, T, H, W, 3) uint8


@pytest.fixture(scope="module")
def direct(loaded, frames):
    out = loaded.signatures["serving_default"](frames=tf.constant(frames))
    return {k: v.numpy() for k, v in out.items()}


def _assert_same_top_k(outputs, direct, k=5):
    got = serving.top_k_from_outputs(outputs, k)[0]
    want = [(int(i), LABELS[int(i)], float(s)) for i, s in
            zip(direct["top_k_indices"][0], direct["top_k_scores"][0])]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], atol=1e-6)


def _check_against_spec(inputs, fn):
    _, specs = fn.structured_input_signature
    assert set(inputs) == set(specs)
    for name, tensor in inputs.items():
        assert tensor.dtype == specs[name].dtype
        assert specs[name].shape.is_compatible_with(tensor.shape)


@pytest.mark.parametrize("fmt", ["instances", "inputs"])
def test_rest_body_feeds_the_signature(fmt, loaded, frames, direct):
    fn = loaded.signatures["serving_default"]
    body = serving.build_rest_body(frames, "serving_default", "frames", fmt)
    text = json.dumps(body)                       # what goes over the wire
    parsed = json.loads(text)
    assert parsed["signature_name"] == "serving_default"
    assert (fmt in parsed) and ("inputs" if fmt == "instances" else "instances") not in parsed
    inputs = serving.rest_body_to_inputs(text, fn)
    _check_against_spec(inputs, fn)
    np.testing.assert_array_equal(inputs["frames"].numpy(), frames)
    response = serving.outputs_to_rest_response(fn(**inputs), fmt)
    outputs = serving.parse_rest_response(json.loads(json.dumps(response)))
    np.testing.assert_allclose(outputs["probabilities"], direct["probabilities"], atol=1e-6)
    _assert_same_top_k(outputs, direct)


def test_grpc_request_feeds_the_signature(loaded, frames, direct):
    from tensorflow_serving.apis import predict_pb2
    fn = loaded.signatures["serving_default"]
    request = serving.build_grpc_request(frames, "rnl_tiny", "serving_default", "frames", version=1)
    wire = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert wire.model_spec.name == "rnl_tiny" and wire.model_spec.signature_name == "serving_default"
    assert wire.model_spec.version.value == 1
    assert tf.as_dtype(wire.inputs["frames"].dtype) == tf.uint8
    assert [d.size for d in wire.inputs["frames"].tensor_shape.dim] == list(frames.shape)
    inputs = serving.grpc_request_to_inputs(wire, fn)
    _check_against_spec(inputs, fn)
    response = serving.outputs_to_grpc_response(fn(**inputs), "rnl_tiny", "serving_default")
    outputs = serving.parse_grpc_response(
        predict_pb2.PredictResponse.FromString(response.SerializeToString()))
    _assert_same_top_k(outputs, direct)


def test_float_signature_request(loaded, frames, direct):
    from rnl_keras.export import preprocess_frames_np
    fn = loaded.signatures["serving_float"]
    clip = preprocess_frames_np(frames, S)
    for request in (serving.build_rest_body(clip, "serving_float", "clip"),
                    serving.build_grpc_request(clip, "rnl_tiny", "serving_float", "clip")):
        if isinstance(request, dict):
            inputs = serving.rest_body_to_inputs(json.dumps(request), fn)
        else:
            inputs = serving.grpc_request_to_inputs(request, fn)
        _check_against_spec(inputs, fn)
        out = {k: v.numpy() for k, v in fn(**inputs).items()}
        np.testing.assert_allclose(out["probabilities"], direct["probabilities"], atol=1e-5)


def test_mismatched_requests_are_rejected(loaded, frames):
    from rnl_keras.export import preprocess_frames_np
    fn = loaded.signatures["serving_default"]
    with pytest.raises(serving.RequestMismatch, match="inputs"):
        serving.rest_body_to_inputs(serving.build_rest_body(frames, input_name="clip"), fn)
    with pytest.raises(serving.RequestMismatch, match="floats|dtype"):
        serving.rest_body_to_inputs(serving.build_rest_body(frames.astype(np.float32) + 0.5), fn)
    with pytest.raises(serving.RequestMismatch, match="shape"):
        serving.rest_body_to_inputs(serving.build_rest_body(frames[:, :T - 1]), fn)
    with pytest.raises(serving.RequestMismatch, match="dtype"):
        clip = preprocess_frames_np(frames, S)
        serving.grpc_request_to_inputs(serving.build_grpc_request(clip, "m", input_name="frames"), fn)


class _FakeServer:
    """REST and gRPC endpoints answering Predict with the loaded SavedModel (one model name)."""

    def __init__(self, loaded, name="rnl_tiny"):
        self.loaded, self.name, self.requests = loaded, name, []

    def predict(self, signature_name, decode):
        fn = self.loaded.signatures[signature_name or "serving_default"]
        return fn(**decode(fn))

    def rest(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(self.path)
                if self.path != f"/v1/models/{outer.name}:predict":
                    self.send_response(404)
                    self.end_headers()
                    self.wfile.write(json.dumps({"error": "Servable not found"}).encode())
                    return
                data = json.loads(body)
                out = outer.predict(data.get("signature_name"),
                                    lambda fn: serving.rest_body_to_inputs(data, fn))
                fmt = "instances" if "instances" in data else "inputs"
                payload = json.dumps(serving.outputs_to_rest_response(out, fmt)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@pytest.fixture(scope="module")
def rest_server(loaded):
    fake = _FakeServer(loaded)
    server = fake.rest()
    yield fake, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_rest_transport_and_client_cli(rest_server, direct):
    fake, address = rest_server
    url = serving.rest_url(address, "rnl_tiny")
    assert url == f"http://{address}/v1/models/rnl_tiny:predict"
    assert serving.rest_url(address, "m", 3).endswith("/v1/models/m/versions/3:predict")
    with pytest.raises(serving.ServingError, match="HTTP 404"):
        serving.send_rest(serving.rest_url(address, "other"), {"instances": []})
    # The command-line client end to end over HTTP (decodes the video itself).
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "pipelines", "serving_client.py"),
                           VIDEOS[1], f"--server={address}", "--model_name=rnl_tiny",
                           "--protocol=rest", f"--num_frames={T}", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])["top_k"]
    assert [g["label"] for g in got] == [LABELS[i] for i in direct["top_k_indices"][0]]
    np.testing.assert_allclose([g["score"] for g in got], direct["top_k_scores"][0], atol=1e-6)
    assert fake.requests[-1] == "/v1/models/rnl_tiny:predict"


def test_grpc_transport(loaded, frames, direct):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    fake = _FakeServer(loaded)

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802
            if request.model_spec.name != fake.name:
                context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found")
            out = fake.predict(request.model_spec.signature_name,
                               lambda fn: serving.grpc_request_to_inputs(request, fn))
            return serving.outputs_to_grpc_response(out, fake.name)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        request = serving.build_grpc_request(frames, "rnl_tiny")
        outputs = serving.parse_grpc_response(serving.send_grpc(address, request, timeout=120))
        _assert_same_top_k(outputs, direct)
        with pytest.raises(serving.ServingError, match="NOT_FOUND"):
            serving.send_grpc(address, serving.build_grpc_request(frames, "nope"), timeout=60)
    finally:
        server.stop(0)
