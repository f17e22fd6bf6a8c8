"""Keras callback reporting skipped bad samples at the end of every epoch."""
from __future__ import annotations

import keras

from rnl_keras.data.errors import BadSampleLog, report_bad_samples


class BadSampleReport(keras.callbacks.Callback):
    """Logs ``"epoch N: k bad sample(s) skipped this epoch, K in total"`` and adds ``bad_samples``
    (the running total) to the epoch logs."""

    def __init__(self):
        super().__init__()
        self._seen = BadSampleLog.count()
        self.last_message = ""

    def on_epoch_end(self, epoch, logs=None):
        self.last_message = report_bad_samples(epoch + 1, since=self._seen)
        self._seen = BadSampleLog.count()
        if logs is not None:
            logs["bad_samples"] = float(self._seen)
