"""Test protocols of the paper as presets: clips x crops, crop size, shorter side, score averaging.

The paper (Sec. IV-A, "Training and Inference"): "we uniformly sample 10/2 clips for
Kinetics-400/Something-Something V1, and perform spatially fully convolutional inference (three
crops of size 256x256 to cover the spatial dimensions) for all clips, and the video-level
prediction is obtained by averaging all the clip prediction scores of a video." As in TSM's
``test_models.py --full_res`` the frames' shorter side is resized to 256 and 3 crops of 256 x 256
are taken along the longer side; a model trained at 224 runs on them through
:func:`rnl_keras.evaluation.rebuild.with_input_size`.

==========  =========================================  ======  ====  ==============
preset      clips                                      crops   S     resize_shorter
==========  =========================================  ======  ====  ==============
``single``  1 (segment centres)                        1       model default (S*256//224)
``k400``    10 (TSN: shifted segment centres; dense:   3       256   256
            10 windows)
``ssv1``    2 (TSN: centres + starts, TSM's            3       256   256
            ``twice_sample``; dense: 2 windows)
==========  =========================================  ======  ====  ==============

Explicit flags always override a preset. Score averaging: ``softmax`` (average the views'
probabilities, the paper's "prediction scores") or ``logits`` (average the logits, then softmax /
argmax: what the authors' released test script does, see docs/fidelity.md).
"""
from __future__ import annotations

PROTOCOLS = ("single", "k400", "ssv1")
SCORE_AVERAGES = ("softmax", "logits")

_PRESETS = {
    "single": {"test_clips": 1, "test_crops": 1, "twice_sample": False, "image_size": None,
               "resize_shorter": None},
    "k400": {"test_clips": 10, "test_crops": 3, "twice_sample": False, "image_size": 256,
             "resize_shorter": 256},
    "ssv1": {"test_clips": 2, "test_crops": 3, "twice_sample": False, "image_size": 256,
             "resize_shorter": 256},
}


def resolve_protocol(name: str, sampling: str = "tsn", **explicit) -> dict:
    """The test settings of preset ``name`` with the explicitly given values on top.

    Args:
      name: one of :data:`PROTOCOLS`.
      sampling: ``"tsn"`` or ``"dense"``; with TSN the SSv1 preset's 2 clips are TSM's
        ``twice_sample`` (segment centres and starts), i.e. ``test_clips=1, twice_sample=True``.
      explicit: settings the user gave (``test_clips``, ``test_crops``, ``twice_sample``,
        ``image_size``, ``resize_shorter``); ``None`` values are ignored.

    Returns:
      dict with the five keys; ``image_size`` / ``resize_shorter`` may be ``None`` (the model's
      size / the default shorter side).
    """
    if name not in _PRESETS:
        raise ValueError(f"--protocol={name!r}: must be one of {PROTOCOLS}")
    out = dict(_PRESETS[name])
    if name == "ssv1" and sampling == "tsn":
        out.update(test_clips=1, twice_sample=True)
    given = {k: v for k, v in explicit.items() if v is not None}
    unknown = set(given) - set(out)
    if unknown:
        raise ValueError(f"unknown protocol settings {sorted(unknown)}")
    if "test_clips" in given and "twice_sample" not in given:
        out["twice_sample"] = False   # an explicit clip count means exactly that many clips
    if "image_size" in given and "resize_shorter" not in given:
        out["resize_shorter"] = None  # the default rule for the asked crop, not the preset's 256
    out.update(given)
    return out
