"""Helpers of the export tests: tiny TSM-ResNets with every attention type.

The models are small (stage_blocks (1, 1, 1, 1), base width 8, 48x48, T = 4) so the export with
both TFLite files takes ~20 s. The classifier weights are rescaled so the logits have a standard
deviation of ~4 on real clips: with random init the probabilities would otherwise be nearly uniform
and parity / top-1 agreement checks would be weak.
"""
import os

import keras
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "tests", "data")
VIDEOS = [os.path.join(DATA, f) for f in (
    "carphone_pristine.mp4", "WUzgd7C1pWA.mp4",
    "hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi", "v_SoccerJuggling_g23_c01.avi")]
T, S, K = 4, 48, 7
LABELS = ["abseiling", "air drumming", "answering questions", "applauding", "class with spaces",
          "déjà vu (utf-8)", "zumba"]


def tiny_tsm(attention, seed=0, num_classes=K):
    from rnl_keras.models import tsm_resnet50
    keras.utils.set_random_seed(seed)
    gates = (("res3", 0),) if attention in ("se+rnl", "rnl") else ()
    return tsm_resnet50(num_classes, num_frames=T, attention=attention, image_size=S,
                        stage_blocks=(1, 1, 1, 1), base_width=8,
                        placement=(("res3", 0), ("res4", 0)), channel_gate_at=gates)


def sharpen(model, clips, target_std=4.0):
    """Rescale the classifier so logits on ``clips`` have std ``target_std``."""
    logits = np.asarray(model(clips, training=False))
    fc = model.get_layer("fc")
    kernel, bias = fc.get_weights()
    scale = target_std / max(float(logits.std()), 1e-6)
    fc.set_weights([kernel * scale, bias * scale])
    return model
