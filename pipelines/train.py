"""Train the (RNL) TSM-ResNet50: ``python pipelines/train.py --flagfile=configs/<recipe>.flags``.

Recipes live in ``configs/`` (k400_paper, ssv1_paper, k400_released, ssv1_released, demo); any flag
given after ``--flagfile`` overrides the file. ``--helpfull`` lists every flag. Bad flags are
refused before any work with a message naming the flag. See ``rnl_keras/training/``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from rnl_keras.training import flags as train_flags  # noqa: E402,F401  (defines the flags)

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from rnl_keras.training.config import ConfigError
    cfg = train_flags.config_from_flags(FLAGS)
    from rnl_keras.training import strategy as strat
    try:
        # Logical CPU devices must exist before TensorFlow initialises its runtime.
        strat.configure_cpu_devices(cfg.cpu_devices)
        from rnl_keras.training.loop import Trainer
        trainer = Trainer(cfg)
    except ConfigError as err:
        raise app.UsageError(str(err)) from None
    trainer.run()


if __name__ == "__main__":
    app.run(main)
