"""TF Serving client: ``python pipelines/serving_client.py VIDEO --server=host:port --model_name=N``.

Samples T frames from the video (TSN centre sampling, as predict.py), builds a Predict request and
prints the top-k classes returned by the server:

* ``--protocol=rest`` (server's ``--rest_api_port``, 8501 by default): POST
  ``/v1/models/<model_name>[/versions/<v>]:predict`` with ``{"signature_name": ..., "instances": [...]}``
  (``--rest_format=inputs`` for the columnar ``{"inputs": {...}}`` form), sent with urllib.
* ``--protocol=grpc`` (server's ``--port``, 8500 by default): a ``PredictRequest`` built with
  ``tf.make_tensor_proto`` and sent with ``PredictionServiceStub.Predict``.

``--signature=serving_default`` sends uint8 frames at decoded size (the model preprocesses);
``--signature=serving_float`` preprocesses in NumPy first (the test transform's NumPy twin) and
needs ``--image_size`` (and ``--resize_shorter`` if the export used another than the default).
The server refuses frames above the export's ``--max_frame_size``: use ``--max_shorter`` for large
videos. ``--local_saved_model=DIR`` skips the network and
answers the same request with an in-process SavedModel (decoding it as TF Serving would), which is
how the client is tested where no model server exists.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import rnl_keras  # noqa: E402,F401  (before TensorFlow loads: the package's oneDNN default)

from absl import app, flags  # noqa: E402

flags.DEFINE_string("server", "localhost:8501", "Model server host:port (REST or gRPC port).")
flags.DEFINE_string("model_name", None, "Model name on the server (export's --name).")
flags.DEFINE_integer("model_version", None, "Version to query (default: the server's latest).")
flags.DEFINE_string("signature", "serving_default", "serving_default (uint8 frames) or "
                    "serving_float (normalised float32 clips).")
flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "Transport.")
flags.DEFINE_enum("rest_format", "instances", ["instances", "inputs"], "REST body: row or columnar.")
flags.DEFINE_string("input_name", None, "Input tensor name (default: frames for serving_default, "
                    "clip for serving_float).")
flags.DEFINE_integer("num_frames", 8, "Frames per clip T (must match the model).")
flags.DEFINE_integer("image_size", None, "serving_float only: crop size S of the model.")
flags.DEFINE_integer("resize_shorter", None, "serving_float only: shorter side before the crop "
                     "(default: S * 256 // 224, the export's and evaluate.py's default; give the "
                     "export's value if it used another).")
flags.DEFINE_integer("max_shorter", None, "Downscale decoded frames to this shorter side before "
                     "sending (smaller requests; default: send decoded size).")
flags.DEFINE_integer("top_k", 5, "Number of classes to print.")
flags.DEFINE_float("timeout", 60.0, "Request timeout in seconds.")
flags.DEFINE_string("labels", None, "Class names file, used only when the server returns no "
                    "top_k_labels.")
flags.DEFINE_string("local_saved_model", None, "Answer the request in-process with this SavedModel "
                    "directory instead of a server (no network).")
flags.DEFINE_bool("json", False, "Print the result as JSON.")

FLAGS = flags.FLAGS


def build_request(video):
    """Decode the clip and build (frames, request) for the chosen protocol / signature."""
    import numpy as np

    from rnl_keras.export import serving
    from rnl_keras.export.predictor import read_clip
    frames = read_clip(video, FLAGS.num_frames, max_shorter=FLAGS.max_shorter)
    input_name = FLAGS.input_name or serving.DEFAULT_INPUT_NAMES.get(FLAGS.signature, "frames")
    batch = frames[None]
    if FLAGS.signature == "serving_float":
        if not FLAGS.image_size:
            raise app.UsageError("--signature=serving_float needs --image_size")
        from rnl_keras.export.preprocess import preprocess_frames_np
        batch = preprocess_frames_np(batch, FLAGS.image_size, FLAGS.resize_shorter)
    batch = np.ascontiguousarray(batch)
    if FLAGS.protocol == "rest":
        return batch, serving.build_rest_body(batch, FLAGS.signature, input_name, FLAGS.rest_format)
    return batch, serving.build_grpc_request(batch, FLAGS.model_name, FLAGS.signature, input_name,
                                             FLAGS.model_version)


def answer_locally(request, saved_model_dir):
    """Emulate the server: decode the request against the loaded signature and run it."""
    import tensorflow as tf

    from rnl_keras.export import serving
    from rnl_keras.export.predictor import latest_version_dir
    loaded = tf.saved_model.load(latest_version_dir(saved_model_dir))
    if FLAGS.signature not in loaded.signatures:
        raise serving.ServingError(f"signature {FLAGS.signature!r} not in {sorted(loaded.signatures)}")
    fn = loaded.signatures[FLAGS.signature]
    if FLAGS.protocol == "rest":
        inputs = serving.rest_body_to_inputs(json.dumps(request), fn)
        return serving.outputs_to_rest_response(fn(**inputs), FLAGS.rest_format)
    inputs = serving.grpc_request_to_inputs(request, fn)
    return serving.outputs_to_grpc_response(fn(**inputs), FLAGS.model_name or "", FLAGS.signature)


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("usage: serving_client.py VIDEO --server=host:port --model_name=NAME")
    if not FLAGS.model_name and not FLAGS.local_saved_model:
        raise app.UsageError("--model_name is required")
    from rnl_keras.export import serving
    from rnl_keras.export.labels import read_labels
    from rnl_keras.export.predictor import VideoReadError
    video = argv[1]
    try:
        _, request = build_request(video)
    except VideoReadError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        if FLAGS.local_saved_model:
            response = answer_locally(request, FLAGS.local_saved_model)
        elif FLAGS.protocol == "rest":
            url = serving.rest_url(FLAGS.server, FLAGS.model_name, FLAGS.model_version)
            response = serving.send_rest(url, request, FLAGS.timeout)
        else:
            response = serving.send_grpc(FLAGS.server, request, FLAGS.timeout)
        outputs = (serving.parse_rest_response(response) if FLAGS.protocol == "rest"
                   else serving.parse_grpc_response(response))
    except (serving.ServingError, serving.RequestMismatch) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    labels = read_labels(FLAGS.labels) if FLAGS.labels else None
    top = serving.top_k_from_outputs(outputs, FLAGS.top_k, labels)[0]
    if FLAGS.json:
        print(json.dumps({"video": video, "top_k": [{"index": i, "label": n, "score": s}
                                                    for i, n, s in top]}))
        return
    for rank, (index, name, score) in enumerate(top, start=1):
        print(f"{rank}\t{name}\t{score:.4f}\t(class {index})")


if __name__ == "__main__":
    app.run(main)
