"""Import the authors' PyTorch checkpoints (RNL TSM-ResNet50) and TSM's plain TSM-ResNet50 ones.

A checkpoint's ``state_dict`` maps key names to tensors; this module takes that mapping with the
tensors already turned into NumPy arrays (no torch import anywhere: :func:`load_torch_state_dict`
reads ``.pth`` / ``.pth.tar`` files with a safe allow-list unpickler) and returns a ``tsm_resnet50`` Keras
model with every weight set, in the configuration the keys describe.

Released layout (docs/fidelity.md sections 1, 3 and 7, and the authors' ``ops/rnl.py``; prefixes
``module.`` (DataParallel) and ``base_model.`` are optional here):

* torchvision ResNet-50 (v1.5: stride in the 3x3 conv), no conv biases, BN eps 1e-5:
  ``conv1.weight``, ``bn1.*``, ``layer{S}.{I}.conv{1,2,3}.weight``, ``layer{S}.{I}.bn{1,2,3}.*``,
  ``layer{S}.{I}.downsample.{0,1}.*``. torch ``layer{S}.{I}`` is Keras ``conv{S+1}_block{I+1}``.
* TSM's "blockres" shift wraps conv1 of every bottleneck: ``conv1.net.weight`` (a checkpoint
  whose keys have plain ``conv1.weight`` is read as a TSN model, ``shift=False``).
* ``NL3DWrapper`` wraps the bottleneck as ``.block`` and applies, to the block's OUTPUT (after
  its final ReLU), first the channel gate ``cg`` (if any), then the RNL ``nl``:
  ``layer2.0.block.conv1.net.weight``, ``layer2.0.cg.*``, ``layer2.0.nl.*``. Released placement:
  cg+nl after layer2.0 (res3[0]), nl after layer2.2, layer3.0, layer3.2, layer3.4; F_theta 3x7x7
  in layer2, 3x3x3 in layer3. The model is built with ``channel_gate_at=(("res3", 0),)``, which
  the builder also applies after the block and before the RNL.
* RNL ``nl``: ``theta.{weight,bias}`` (Conv3d C -> C/2, 1x1x1), ``penta.{weight,mask}``
  (C/2, 32, kt, kh, kw): a grouped conv (groups = max(C/2 // 32, 1)) whose weight is multiplied by
  a 0/1 mask keeping only ``weight[i, i % 32]``, i.e. a depthwise conv; it is collapsed to
  ``f_theta_kernel[..., i] = weight[i, i % 32]`` after checking that the mask is 1 exactly there.
  ``W.0.{weight,bias}`` (Conv3d C/2 -> C), ``W.1.*`` (BatchNorm3d). Gaussian similarity, softmax
  over keys, no key sub-sampling (the release's defaults, which ``RegionNonLocal`` also uses).
* channel gate ``cg``: ``W_k.{weight,bias}`` (Conv3d C -> 1), ``W_v1.{weight,bias}`` (Linear
  C -> C/2: reduction 2), ``bn1.*`` (BatchNorm1d), ``W_v2.{weight,bias}`` (Linear C/2 -> C).
* classifier ``new_fc.{weight,bias}`` (Linear 2048 -> K, dropout before it), or ``base_model.fc``
  when the model was trained with dropout 0.
* TSM's own non-local checkpoints (embedded Gaussian NL, ``nl.{theta,phi,g,W}``; ``phi``/``g``
  wrapped with a 1x2x2 max-pool as ``phi.0``/``g.0`` when sub-sampled) are read as
  ``attention="nl"`` at the same five positions.

Weights: Conv2d (O, I, kh, kw) -> (kh, kw, I, O); 1x1x1 Conv3d (O, I, 1, 1, 1) -> Dense (I, O);
Linear (O, I) -> (I, O); BatchNorm weight / bias / running_mean / running_var -> gamma / beta /
moving_mean / moving_variance; ``num_batches_tracked`` is consumed and ignored.

Assumptions (state dict content the release does not pin down): the gate's BatchNorm1d and the
RNL's BatchNorm3d use eps 1e-5 (PyTorch's default, and the release's explicit value for bn1);
BN momentum only matters when training on and is left at the Keras layers' values.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from rnl_keras.checkpoints.torch_pickle import UnsafeCheckpointError, read_torch_file

RELEASED_PLACEMENT = (("res3", 0), ("res3", 2), ("res4", 0), ("res4", 2), ("res4", 4))
RELEASED_GATES = (("res3", 0),)
RELEASED_KERNELS = {"res3": (3, 7, 7), "res4": (3, 3, 3)}
STAGE_TO_TORCH = {"res2": 1, "res3": 2, "res4": 3, "res5": 4}
_STAGE_BLOCKS = {"res2": 3, "res3": 4, "res4": 6, "res5": 3}
_MAX_LISTED = 25


class CheckpointError(ValueError):
    """A state dict does not fit the released layout; the message names every offending key."""


@dataclass
class _Entry:
    key: str                    # normalised torch key (no module. / base_model. prefix)
    variable: object            # the Keras variable it sets
    kind: str                   # how the array is transformed
    torch_shape: tuple          # the shape the key must have


# --------------------------------------------------------------------------- key handling
def normalize_key(key: str) -> str:
    """Drop the DataParallel ``module.`` and TSN's ``base_model.`` prefixes."""
    if key.startswith("module."):
        key = key[len("module."):]
    if key.startswith("base_model."):
        key = key[len("base_model."):]
    return key


def _normalize(state_dict) -> tuple[dict, dict]:
    """Normalised key -> array, and normalised key -> original key (for messages)."""
    arrays, originals, clashes = {}, {}, []
    for key, value in state_dict.items():
        norm = normalize_key(str(key))
        if norm in arrays:
            clashes.append(f"{originals[norm]!r} and {key!r}")
            continue
        arrays[norm] = value
        originals[norm] = str(key)
    if clashes:
        raise CheckpointError("state dict has keys that differ only by the module./base_model. "
                              f"prefix: {'; '.join(clashes)}")
    return arrays, originals


def detect_configuration(state_dict) -> dict:
    """Read the model configuration from a (released-layout) state dict's key names.

    Returns a dict with ``attention`` ("rnl", "nl" or "none"), ``placement``, ``channel_gate_at``,
    ``shift``, ``nl_subsample``, ``classifier`` (key prefix) and ``num_classes``.
    """
    keys = [normalize_key(str(k)) for k in state_dict]
    placement, gates = [], []
    kinds = set()
    nl_subsample = False
    for stage, torch_stage in STAGE_TO_TORCH.items():
        for index in range(_STAGE_BLOCKS[stage]):
            prefix = f"layer{torch_stage}.{index}."
            if any(k.startswith(prefix + "nl.") for k in keys):
                placement.append((stage, index))
                if any(k.startswith(prefix + "nl.penta.") for k in keys):
                    kinds.add("rnl")
                elif any(k.startswith(prefix + "nl.phi.") for k in keys):
                    kinds.add("nl")
                    nl_subsample |= any(k.startswith(prefix + "nl.phi.0.") for k in keys)
                else:
                    kinds.add("rnl")   # incomplete block: the key check names what is missing
            if any(k.startswith(prefix + "cg.") for k in keys):
                gates.append((stage, index))
    if len(kinds) > 1:
        raise CheckpointError("state dict mixes region non-local (nl.penta) and non-local "
                              "(nl.phi) blocks; cannot build one model for both")
    attention = kinds.pop() if kinds else "none"
    if any(k.startswith("new_fc.") for k in keys):
        classifier = "new_fc"
    elif any(k.startswith("fc.") for k in keys):
        classifier = "fc"
    else:
        classifier = None
    num_classes = None
    if classifier is not None and f"{classifier}.weight" in keys:
        weight = state_dict[_find_original(state_dict, f"{classifier}.weight")]
        num_classes = int(np.shape(weight)[0])
    shift = any(re.fullmatch(r"layer\d\.\d+\.(block\.)?conv1\.net\.weight", k) for k in keys)
    return {"attention": attention, "placement": tuple(placement),
            "channel_gate_at": tuple(gates), "shift": shift, "nl_subsample": nl_subsample,
            "classifier": classifier, "num_classes": num_classes}


def _find_original(state_dict, norm_key):
    for key in state_dict:
        if normalize_key(str(key)) == norm_key:
            return key
    raise KeyError(norm_key)


# --------------------------------------------------------------------------- the model
def build_released_model(num_classes, num_frames=8, image_size=224, attention="rnl",
                         placement=RELEASED_PLACEMENT, channel_gate_at=RELEASED_GATES, shift=True,
                         nl_subsample=True, dropout=0.5, name=None):
    """``tsm_resnet50`` in the configuration of the released checkpoints (random weights)."""
    from rnl_keras.models.tsm_resnet import tsm_resnet50

    kwargs = {}
    if attention == "nl":
        kwargs["nl_kwargs"] = {"subsample": bool(nl_subsample)}
    return tsm_resnet50(
        num_classes, num_frames=num_frames, attention=attention, image_size=image_size,
        shift=shift, fold_div=8, placement=placement or RELEASED_PLACEMENT,
        rnl_kernel_sizes=dict(RELEASED_KERNELS), channel_gate_at=tuple(channel_gate_at),
        dropout=dropout, resnet_variant="torchvision", use_conv_bias=False, bn_epsilon=1e-5,
        name=name, **kwargs)


def _conv_entry(key, variable):
    kh, kw, i, o = variable.shape
    return _Entry(key, variable, "conv2d", (o, i, kh, kw))


def _bn_entries(prefix, bn):
    c = bn.gamma.shape[0]
    return [_Entry(f"{prefix}.weight", bn.gamma, "vector", (c,)),
            _Entry(f"{prefix}.bias", bn.beta, "vector", (c,)),
            _Entry(f"{prefix}.running_mean", bn.moving_mean, "vector", (c,)),
            _Entry(f"{prefix}.running_var", bn.moving_variance, "vector", (c,))]


def _dense_entries(prefix, dense, kind):
    i, o = dense.kernel.shape
    shape = (o, i, 1, 1, 1) if kind == "conv3d" else (o, i)
    out = [_Entry(f"{prefix}.weight", dense.kernel, kind, shape)]
    if dense.bias is not None:
        out.append(_Entry(f"{prefix}.bias", dense.bias, "vector", (o,)))
    return out


def _penta_shape(channels, kernel_size):
    groups = max(channels // 32, 1)
    return (channels, channels // groups) + tuple(kernel_size)


_BLOCK_LAYER = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)")   # a bottleneck's conv / BN
_IN_BLOCK = re.compile(r"conv(\d)_block(\d+)_")                     # any layer of a bottleneck


def _attention_types() -> tuple:
    """The layer classes torch holds as a bottleneck's ``cg`` / ``nl`` (imported when needed)."""
    from rnl_keras.layers import ChannelGate, NonLocal, RegionNonLocal

    return (ChannelGate, NonLocal, RegionNonLocal)


class _Layout:
    """The entries and optional keys :func:`released_layout` collects, and how blocks are named."""

    def __init__(self, wrapped: set, shift: bool):
        self.entries: list = []
        self.optional: set = set()
        self.wrapped = wrapped      # (stage, block) that torch wraps as ``.block``
        self.shift = shift

    def block_prefix(self, stage: int, block: int) -> str:
        """torch prefix of Keras ``conv{stage}_block{block}`` (with ``.block`` when wrapped)."""
        base = f"layer{stage - 1}.{block - 1}"
        return base + ".block" if (stage, block) in self.wrapped else base

    def add_bn(self, prefix: str, bn) -> None:
        """The four BatchNorm keys of ``prefix``; its ``num_batches_tracked`` is optional."""
        self.entries.extend(_bn_entries(prefix, bn))
        self.optional.add(f"{prefix}.num_batches_tracked")


def _wrapped_blocks(model, attention_types: tuple) -> set:
    """(stage, block) of the bottlenecks followed by a gate or attention block: torch's
    ``NL3DWrapper`` holds them as ``.block``."""
    wrapped = set()
    for layer in model.layers:
        m = _IN_BLOCK.match(layer.name)
        if m and isinstance(layer, attention_types):
            wrapped.add((int(m.group(1)), int(m.group(2))))
    return wrapped


def released_layout(model, shift=True, classifier="new_fc") -> tuple[list, set]:
    """The torch keys a released-layout checkpoint must hold for ``model``.

    Returns ``(entries, optional)``: one :class:`_Entry` per Keras weight (plus the penta masks,
    with ``variable=None``), and the keys that may be present and are ignored
    (``num_batches_tracked``).
    """
    attention_types = _attention_types()
    layout = _Layout(_wrapped_blocks(model, attention_types), shift)
    for layer in model.layers:
        if layer.weights:
            _add_layer(layout, layer, classifier, attention_types)
    return layout.entries, layout.optional


def _add_layer(layout: _Layout, layer, classifier, attention_types: tuple) -> None:
    """Add the keys of one Keras layer with weights; :class:`CheckpointError` when the released
    layout has no counterpart for it."""
    name = layer.name
    if name == "conv1_conv":
        layout.entries.append(_conv_entry("conv1.weight", layer.kernel))
    elif name == "conv1_bn":
        layout.add_bn("bn1", layer)
    elif name == "fc":
        prefix = "new_fc" if classifier is None else classifier
        layout.entries.extend(_dense_entries(prefix, layer, "linear"))
    elif (m := _BLOCK_LAYER.fullmatch(name)):
        _add_bottleneck_layer(layout, layer, m)
    else:
        m = _IN_BLOCK.match(name)
        if not m or not isinstance(layer, attention_types):
            raise CheckpointError(f"layer {name!r} ({type(layer).__name__}) has weights but no "
                                  "counterpart in the released checkpoint layout")
        _add_attention(layout, layer, f"layer{int(m.group(1)) - 1}.{int(m.group(2)) - 1}")


def _torch_bottleneck_name(part: int, what: str, shift: bool) -> str:
    """torch name of a bottleneck's ``conv`` / ``bn`` number ``part`` (0: the shortcut's)."""
    if part == 0:
        return "downsample.0" if what == "conv" else "downsample.1"
    if what == "conv":
        return "conv1.net" if part == 1 and shift else f"conv{part}"
    return f"bn{part}"


def _add_bottleneck_layer(layout: _Layout, layer, match) -> None:
    """Add the keys of a bottleneck's conv or BN (``match``: :data:`_BLOCK_LAYER` on its name)."""
    stage, block, part, what = (int(match.group(1)), int(match.group(2)), int(match.group(3)),
                                match.group(4))
    prefix = layout.block_prefix(stage, block)
    torch_name = _torch_bottleneck_name(part, what, layout.shift)
    if what != "conv":
        layout.add_bn(f"{prefix}.{torch_name}", layer)
        return
    if layer.bias is not None:
        raise CheckpointError(f"layer {layer.name} has a conv bias; the released ResNet has "
                              "none (build with use_conv_bias=False)")
    layout.entries.append(_conv_entry(f"{prefix}.{torch_name}.weight", layer.kernel))


def _add_attention(layout: _Layout, layer, base: str) -> None:
    """Add the keys of the gate (``{base}.cg``) or attention block (``{base}.nl``) ``layer``."""
    from rnl_keras.layers import ChannelGate, NonLocal, RegionNonLocal

    if isinstance(layer, RegionNonLocal):
        _add_region_nonlocal(layout, layer, f"{base}.nl")
    elif isinstance(layer, NonLocal):
        _add_nonlocal(layout, layer, f"{base}.nl")
    elif isinstance(layer, ChannelGate):
        _add_channel_gate(layout, layer, f"{base}.cg")
    else:
        raise CheckpointError(f"layer {layer.name!r} ({type(layer).__name__}) has no counterpart "
                              "in the released checkpoint layout")


def _add_region_nonlocal(layout: _Layout, layer, p: str) -> None:
    """RNL keys: ``theta``, the masked grouped ``penta`` (weight, mask), ``W.0``, ``W.1`` (BN)."""
    if layer.aggregation != "conv" or layer.similarity != "gaussian" or layer.key_subsample:
        raise CheckpointError(f"{layer.name}: the release has aggregation='conv', "
                              "similarity='gaussian', key_subsample=False")
    layout.entries.extend(_dense_entries(f"{p}.theta", layer.theta, "conv3d"))
    shape = _penta_shape(layer.inter_channels, layer.kernel_size)
    layout.entries.append(_Entry(f"{p}.penta.weight", layer.f_theta_kernel, "penta", shape))
    layout.entries.append(_Entry(f"{p}.penta.mask", None, "mask", shape))
    layout.entries.extend(_dense_entries(f"{p}.W.0", layer.w_z, "conv3d"))
    layout.add_bn(f"{p}.W.1", layer.bn)


def _add_nonlocal(layout: _Layout, layer, p: str) -> None:
    """Non-local keys: ``theta``, ``phi`` / ``g`` (``.0`` when max-pool sub-sampled), ``W``."""
    sub = ".0" if layer.subsample else ""
    layout.entries.extend(_dense_entries(f"{p}.theta", layer.theta, "conv3d"))
    layout.entries.extend(_dense_entries(f"{p}.phi{sub}", layer.phi, "conv3d"))
    layout.entries.extend(_dense_entries(f"{p}.g{sub}", layer.g, "conv3d"))
    layout.entries.extend(_dense_entries(f"{p}.W.0", layer.w, "conv3d"))
    layout.add_bn(f"{p}.W.1", layer.bn)


def _add_channel_gate(layout: _Layout, layer, p: str) -> None:
    """Channel-gate keys: ``W_k`` (Conv3d), ``W_v1`` (Linear), ``bn1``, ``W_v2`` (Linear)."""
    layout.entries.extend(_dense_entries(f"{p}.W_k", layer.w_k, "conv3d"))
    layout.entries.extend(_dense_entries(f"{p}.W_v1", layer.w_v1, "linear"))
    layout.add_bn(f"{p}.bn1", layer.bn1)
    layout.entries.extend(_dense_entries(f"{p}.W_v2", layer.w_v2, "linear"))


# --------------------------------------------------------------------------- conversion
def _penta_kernel(key, weight, mask, problems):
    """(C', cpg, kt, kh, kw) masked grouped weight -> depthwise (kt, kh, kw, C')."""
    channels, per_group = weight.shape[:2]
    rows = np.arange(channels)
    cols = rows % per_group
    if mask is not None:
        expected = np.zeros(mask.shape[:2], bool)
        expected[rows, cols] = True
        on = np.all(mask == 1, axis=(2, 3, 4))
        off = np.all(mask == 0, axis=(2, 3, 4))
        bad = ~((expected & on) | (~expected & off))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            problems.append(f"{key}: mask is not the depthwise diagonal expected by the release "
                            f"(mask[{i}, {j}] should be all {int(expected[i, j])}; "
                            f"{int(bad.sum())} (out, in) pairs differ); cannot collapse "
                            "F_theta to a depthwise conv")
            return None
    diagonal = weight[rows, cols]                       # (C', kt, kh, kw)
    return np.transpose(diagonal, (1, 2, 3, 0))


def _convert(kind, array):
    if kind == "conv2d":
        return np.transpose(array, (2, 3, 1, 0))
    if kind == "conv3d":
        return array.reshape(array.shape[:2]).T
    if kind == "linear":
        return array.T
    return array


def _as_given(key, originals):
    """Spell a normalised key with the prefixes the state dict's own keys use."""
    given = list(originals.values())
    module = "module." if any(k.startswith("module.") for k in given) else ""
    base = ("base_model." if any(k.startswith(("module.base_model.", "base_model."))
                                 for k in given) else "")
    if key.startswith("new_fc."):
        return module + key
    return module + base + key


def _listing(title, items):
    items = sorted(items)
    shown = items[:_MAX_LISTED]
    more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"  {title} ({len(items)}):\n" + "\n".join(f"    {x}" for x in shown) + more


def load_state_dict_into(model, state_dict, shift=True, classifier="new_fc"):
    """Set every weight of ``model`` (built in the released configuration) from ``state_dict``.

    All problems (missing, unexpected and mis-shaped keys, a wrong penta mask, a weight left
    unset) are collected and raised as one :class:`CheckpointError` naming the keys.
    """
    arrays, originals = _normalize(state_dict)
    entries, optional = released_layout(model, shift=shift, classifier=classifier)
    by_key = {e.key: e for e in entries}
    missing = [_as_given(e.key, originals) for e in entries if e.key not in arrays]
    unexpected = [originals[k] for k in arrays if k not in by_key and k not in optional]
    misshaped, problems = [], []
    values = {}
    for entry in entries:
        if entry.key not in arrays:
            continue
        array = np.asarray(arrays[entry.key])
        if tuple(array.shape) != tuple(entry.torch_shape):
            misshaped.append(f"{originals[entry.key]}: shape {tuple(array.shape)}, expected "
                             f"{tuple(entry.torch_shape)}")
            continue
        if not np.issubdtype(array.dtype, np.floating):
            problems.append(f"{originals[entry.key]}: dtype {array.dtype}, expected floating point")
            continue
        values[entry.key] = array
    for entry in entries:
        if entry.kind != "penta" or entry.key not in values:
            continue
        mask_key = entry.key[:-len("weight")] + "mask"
        if mask_key not in values:
            continue  # reported as missing or mis-shaped
        kernel = _penta_kernel(originals[mask_key], values[entry.key].astype(np.float64),
                               values[mask_key], problems)
        values[entry.key] = kernel
    if missing or unexpected or misshaped or problems:
        parts = [f"state dict does not match the released {model.name} layout "
                 f"({len(entries)} keys expected (plus optional num_batches_tracked), "
                 f"{len(arrays)} given):"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if misshaped:
            parts.append(_listing("keys with the wrong shape", misshaped))
        if problems:
            parts.append(_listing("other problems", problems))
        raise CheckpointError("\n".join(parts))
    assigned = set()
    for entry in entries:
        if entry.variable is None:
            continue
        value = values[entry.key]
        value = value if entry.kind == "penta" else _convert(entry.kind, value)
        entry.variable.assign(value.astype(entry.variable.dtype))
        assigned.add(entry.variable.path)
    unset = [w.path for w in model.weights if w.path not in assigned]
    if unset:
        raise CheckpointError(_listing(f"weights of {model.name} with no key in the released "
                                       "layout (left unset)", unset))
    return model


def from_torch_state_dict(state_dict, num_classes=None, num_frames=8, image_size=224,
                          dropout=0.5, name=None):
    """Keras ``tsm_resnet50`` from a released (RNL) TSM-ResNet50 PyTorch state dict.

    Args:
        state_dict: mapping of the released key names (with or without ``module.`` /
            ``module.base_model.``) to NumPy arrays (or anything ``np.asarray`` takes).
        num_classes: classifier size; ``None`` reads it from ``new_fc.weight``. A mismatch
            is an error.
        num_frames: T the checkpoint was trained with (8 or 16; not stored in the file).
        image_size: input size of the Keras graph (the weights do not depend on it;
            ``None`` for any size).
    Returns:
        A ``keras.Model`` (input float32 (B, T, H, W, 3) ImageNet-normalised RGB, output logits
        (B, K)) whose inference-mode logits equal the PyTorch model's for the same clip (fed as
        (B*T, 3, H, W)). RNL checkpoints give ``attention="rnl"`` with the channel gate before the
        first res3 block's RNL; plain TSM ones ``attention="none"``.
    Raises:
        CheckpointError: listing every missing, unexpected or mis-shaped key at once.
    """
    if not hasattr(state_dict, "items"):
        raise TypeError(f"state_dict must be a mapping of key -> array, got {type(state_dict)}")
    config = detect_configuration(state_dict)
    if config["classifier"] is None:
        raise CheckpointError("state dict has no classifier (new_fc.weight / new_fc.bias or "
                              "fc.weight / fc.bias); is this a TSM / RNL video model checkpoint?")
    found = config["num_classes"]
    if num_classes is None:
        if found is None:
            raise CheckpointError(f"missing key {config['classifier']}.weight: cannot infer "
                                  "num_classes")
        num_classes = found
    elif found is not None and int(num_classes) != found:
        raise CheckpointError(f"num_classes={num_classes} but "
                              f"{config['classifier']}.weight has {found} rows")
    model = build_released_model(
        int(num_classes), num_frames=num_frames, image_size=image_size,
        attention=config["attention"], placement=config["placement"],
        channel_gate_at=config["channel_gate_at"], shift=config["shift"],
        nl_subsample=config["nl_subsample"], dropout=dropout, name=name)
    return load_state_dict_into(model, state_dict, shift=config["shift"],
                                classifier=config["classifier"])


# --------------------------------------------------------------------------- file reading
def load_torch_state_dict(path, trust_pickled_code=False, warn=print) -> dict:
    """Read a checkpoint's state dict as {key: np.ndarray}, without PyTorch and without running
    code from the file.

    Args:
        path: ``.pth`` / ``.pt`` / ``.pth.tar`` (``torch.save``: zip archive or legacy format),
            read by :func:`rnl_keras.checkpoints.torch_pickle.read_torch_file`'s allow-list
            unpickler; or ``.npz`` (``np.savez`` of the state dict), read with NumPy.
        trust_pickled_code: DANGEROUS; lets the unpickler import and call globals outside the
            tensor allow-list (old checkpoints that pickled e.g. an ``argparse.Namespace``).
            Only for files from a source you trust.
        warn: receives the warning naming what ``trust_pickled_code`` ran.
    Returns:
        ``checkpoint["state_dict"]`` when the file holds a dict with that key, else the file's
        mapping itself, with every value a NumPy array.
    Raises:
        UnsafeCheckpointError: the pickle needs code outside the allow-list (the message names the
            file and the global) or the file is not a torch checkpoint.
        CheckpointError: the file holds no mapping of arrays.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r}: no such checkpoint file")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except ValueError as err:      # object arrays need pickle: refused
            raise UnsafeCheckpointError(f"{path!r}: {err}") from None
    checkpoint = read_torch_file(path, trust_pickled_code=trust_pickled_code, warn=warn)
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path!r} holds a {type(checkpoint).__name__}, not a state dict")
    bad = [str(k) for k, v in checkpoint.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointError(f"{path!r}: entries that are not tensors: {bad[:5]}")
    return {str(k): v for k, v in checkpoint.items()}
