"""The structure of a built model as plain data, to pin it across refactors of the builders.

``tests/models/data/tsm_resnet_structure.json`` holds the structure of small models built by the
``tsm_resnet50`` of commit 019317d (one 286-line builder, before Table I became a spec and the
backbone / classifier split): every layer's name, class, inbound layers and defining settings, and
every weight's path and shape, in order. Checkpoints, ``.keras`` files, the PyTorch importer and
name-based weight loading rely on exactly these.
"""
import json
import os

SNAPSHOT = os.path.join(os.path.dirname(__file__), "data", "tsm_resnet_structure.json")

# tsm_resnet50 arguments of the pinned models (num_classes 5, T = 2, 32 x 32).
CONFIGS = {
    "rnl_keras_top": dict(attention="rnl", stage_blocks=(1, 2, 3, 1), base_width=8,
                          placement=(("res3", 0), ("res4", 0), ("res4", 2)),
                          rnl_kernel_sizes={"res4": (1, 3, 3)}),
    "sernl_gate_torchvision_notop": dict(attention="se+rnl", channel_gate_at=(("res3", 0),),
                                         resnet_variant="torchvision", include_top=False,
                                         stage_blocks=(1, 1, 1, 1), base_width=8,
                                         placement=(("res3", 0), ("res4", 0))),
    "none_caffe_noshift": dict(attention="none", shift=False, input_convention="caffe",
                               stage_blocks=(2, 1, 1, 2), base_width=4),
    "rnl_res2_res5": dict(attention="rnl", stage_blocks=(1, 1, 1, 1), base_width=4,
                          placement=(("res5", 0), ("res2", 0)), classifier_init="glorot"),
    "nl": dict(attention="nl", stage_blocks=(1, 1, 1, 1), base_width=4, placement=(("res3", 0),)),
    "se_sync": dict(attention="se", stage_blocks=(1, 1, 1, 1), base_width=4,
                    placement=(("res4", 0),), sync_bn=True),
    "gate_named": dict(attention="gate", stage_blocks=(1, 1, 1, 1), base_width=4,
                       placement=(("res2", 0),), name="custom"),
}
BUILD = dict(num_classes=5, num_frames=2, image_size=32)

# The settings that define a layer (stable across Keras versions, unlike the whole config).
_SETTINGS = ("filters", "kernel_size", "strides", "padding", "use_bias", "epsilon", "momentum",
             "synchronized", "units", "rate", "num_frames", "fold_div", "pool_size", "reduction",
             "mode", "similarity", "aggregation", "activation")


def _inbound(model, layer):
    """Names of the layers feeding ``layer`` inside ``model`` (its first node)."""
    node = layer._inbound_nodes[0]
    return [t._keras_history.operation.name for t in node.input_tensors]


def structure(model) -> dict:
    """{"name", "layers": [[name, class, inbound, settings]], "weights": [[path, shape]]}."""
    layers = []
    for layer in model.layers:
        config = layer.get_config()
        settings = {k: config[k] for k in _SETTINGS if k in config}
        layers.append([layer.name, type(layer).__name__, _inbound(model, layer), settings])
    return json.loads(json.dumps({"name": model.name, "layers": layers,
                                  "weights": [[w.path, list(w.shape)] for w in model.weights]}))


def load_snapshot() -> dict:
    with open(SNAPSHOT, encoding="utf-8") as f:
        return json.load(f)
