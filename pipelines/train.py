"""Train the (RNL) TSM-ResNet: ``python pipelines/train.py --flagfile=configs/<recipe>.flags``.

Recipes live in ``configs/`` (k400_paper, ssv1_paper, k400_released, ssv1_released, demo); any flag
given after ``--flagfile`` overrides the file. ``--helpfull`` lists every flag. Bad flags are
refused before any work with a message naming the flag. See ``rnl_keras/training/``.

Every error ends the process promptly: the traceback, then one line naming the cause and where
(the clip, the epoch and step). Exit status: 0 done, 1 an error or bad flags, 130 after Ctrl-C
(SIGINT) and 143 after SIGTERM (both save a checkpoint at the end of the current step first; a
second signal stops at once). See ``rnl_keras/training/failures.py``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from rnl_keras.training import flags as train_flags  # noqa: E402,F401  (defines the flags)

FLAGS = flags.FLAGS


def main(argv):
    """Check the flags, train, and end the process (os._exit) with the status of the outcome."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cfg = train_flags.config_from_flags(FLAGS)
    from rnl_keras.training import failures
    # From here on every way out ends the process with os._exit (see failures.py): a video
    # pipeline's teardown must not keep a failed run alive.
    signals = failures.StopSignals(prog="train.py")
    signals.install()
    holder = {}
    signals.where = lambda: getattr(holder.get("trainer"), "where", "starting")
    try:
        _train(cfg, signals, holder)
    except BaseException as err:  # noqa: BLE001 - any error ends the process, promptly
        from rnl_keras.training.config import ConfigError
        if isinstance(err, (ConfigError, app.UsageError)):
            app.usage(shorthelp=True, detailed_error=err, exitcode=None)
            failures.hard_exit(1)
        failures.exit_on_exception(err, "train.py", signals.where(), peers=signals.peers)
    failures.hard_exit(0)


def _train(cfg, signals, holder):
    """Build the Trainer, train, and remove this process's temporaries whatever happens."""
    from rnl_keras.training import model_dir as mdir, strategy as strat
    rt = cfg.runtime
    chief = strat.chief_by_tf_config(rt.strategy)
    mdir.check_model_dir(rt.model_dir, writable=chief)
    # Logical CPU devices must exist before TensorFlow initialises its runtime.
    strat.configure_cpu_devices(rt.cpu_devices)
    from rnl_keras.training import failures
    # Ended by a signal or a watchdog: no half-written .tmp_* file or worker directory remains.
    failures.at_hard_exit(mdir.remove_own_worker_dirs)
    if chief:
        failures.at_hard_exit(lambda: mdir.clean_stale(rt.model_dir))
    from rnl_keras.training.loop import Trainer
    try:
        holder["trainer"] = Trainer(cfg, stop=signals)
        holder["trainer"].run()
    finally:
        if "trainer" in holder:
            holder["trainer"].close()
        mdir.remove_own_worker_dirs()


if __name__ == "__main__":
    app.run(main)
