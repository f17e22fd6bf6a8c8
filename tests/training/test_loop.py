"""The loop around the task: the callbacks' events, a short pass, and the reductions per step."""
import io
import json
import os

import numpy as np
import tensorflow as tf

from rnl_keras.training.callbacks import Callback
from rnl_keras.training.config import TrainConfig

K, T, SIZE = 3, 2, 32


def _cfg(tmp_path, **kw):
    values = dict(train_list="unused", num_classes=K, model_dir=str(tmp_path / "run"),
                  num_frames=T, image_size=SIZE, resize_shorter=SIZE, attention="none",
                  stage_blocks=(1, 1, 1, 1), base_width=4, dropout=0.0, epochs=2,
                  steps_per_epoch=4, batch_size=2, lr=0.01, lr_schedule="constant",
                  checkpoint_every_steps=0, progress=False, log_every_steps=1)
    values.update(kw)
    cfg = TrainConfig(**values)
    cfg.check()
    return cfg


def _train_fn(batches):
    """In-memory training data: ``batches`` batches of 2 clips per pass (then the pass ends)."""
    rng = np.random.default_rng(0)
    clips = rng.normal(size=(2 * batches, T, SIZE, SIZE, 3)).astype(np.float32)
    labels = (np.arange(2 * batches) % K).astype(np.int32)

    def fn(ctx, seed, batch):
        return tf.data.Dataset.from_tensor_slices((clips, labels)).batch(batch,
                                                                         drop_remainder=True)
    return fn


class _Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self):
        self.events.append(("train_begin",))

    def on_epoch_begin(self, epoch, start_step):
        self.events.append(("epoch_begin", epoch, start_step))

    def on_step_end(self, logs):
        self.events.append(("step", logs.epoch, logs.step, logs.global_step))

    def on_pass_end(self, epoch, steps_done):
        self.events.append(("pass_end", epoch, steps_done))

    def on_epoch_end(self, epoch, record):
        self.events.append(("epoch_end", epoch, record["epoch_steps"], record["bad_samples"]))

    def on_train_end(self, summary):
        self.events.append(("train_end", summary["global_steps"]))


def test_callbacks_see_every_event_and_a_short_pass_ends_the_epoch(tmp_path):
    """3 batches per pass, 4 steps per epoch: each epoch ends after step 3 (no step trains on
    the end-of-pass marker), and the callbacks see it all in order."""
    from rnl_keras.training.loop import Trainer

    cfg = _cfg(tmp_path)
    trainer = Trainer(cfg, num_train=6, train_dataset_fn=_train_fn(3), out=io.StringIO())
    recorder = _Recorder()
    trainer.callbacks.callbacks.append(recorder)
    summary = trainer.run()
    trainer.close()
    steps = [("step", e, s, 3 * e + s + 1) for e in range(2) for s in range(3)]
    assert recorder.events == (
        [("train_begin",), ("epoch_begin", 0, 0)] + steps[:3] + [
            ("pass_end", 0, 3), ("epoch_end", 0, 3, 0), ("epoch_begin", 1, 0)] + steps[3:] + [
            ("pass_end", 1, 3), ("epoch_end", 1, 3, 0), ("train_end", 6)])
    assert summary["global_steps"] == 6 and summary["resumed"] is None
    with open(os.path.join(cfg.runtime.model_dir, "history.json")) as f:
        assert [h["epoch_steps"] for h in json.load(f)] == [3, 3]
    assert summary["workers_weights_sha256"] == [summary["weights_sha256"]]
    assert summary["architecture"].startswith("TSM-ResNet (blocks 1-1-1-1, width 4)")


class _CountingStrategy:
    """The default strategy, counting its cross-replica reductions (traced into the steps)."""

    def __init__(self):
        self._strategy = tf.distribute.get_strategy()
        self.reductions = 0

    def reduce(self, *args, **kwargs):
        self.reductions += 1
        return self._strategy.reduce(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._strategy, name)


def test_one_small_reduction_per_step_besides_the_metrics(tmp_path):
    """Per step: one reduction of [end of pass, stop] before the step and one of [loss sum,
    correct] after it (there were four: the end-of-pass flag, then loss, correct and the stop
    flag, each reduced on its own)."""
    from rnl_keras.training.loop import Trainer

    strategy = _CountingStrategy()
    trainer = Trainer(_cfg(tmp_path, epochs=1, steps_per_epoch=2), strategy=strategy,
                      num_train=4, train_dataset_fn=_train_fn(2), out=io.StringIO())
    trainer.run()
    trainer.close()
    # Each step function is traced once; a reduction traced into it runs at every step.
    assert strategy.reductions == 2
