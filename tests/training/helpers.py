"""Helpers of the training tests: run pipelines/train.py as a subprocess, free ports, flags."""
import json
import os
import socket
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "pipelines", "train.py")

# The smallest model / input that still runs every part of the network: 32x32 crops, 4 frames,
# a TSM-ResNet with one bottleneck per stage (shift in each) and two RNL blocks.
TINY = ["--num_frames=4", "--image_size=32", "--resize_shorter=32", "--flip=false",
        "--attention=rnl", "--stage_blocks=1,1,1,1", "--base_width=8",
        "--placement=res3:0,res4:0", "--num_parallel_calls=1", "--progress=false", "--log_every_steps=1",
        "--lr=0.01", "--weight_decay=1e-4"]


def data_flags(data, val=True):
    flags = [f"--train_list={data['train_list']}", f"--data_root={data['root']}",
             f"--num_classes={data['num_classes']}", f"--classes_file={data['classes_file']}"]
    if val:
        flags.append(f"--val_list={data['val_list']}")
    return flags


def env(extra=None):
    e = dict(os.environ)
    e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
    e["TF_CPP_MIN_LOG_LEVEL"] = "2"
    e["PYTHONUNBUFFERED"] = "1"
    e.pop("TF_CONFIG", None)
    e.update(extra or {})
    return e


def start_train(args, extra_env=None, log_path=None):
    """Start ``pipelines/train.py`` with ``args``; output goes to ``log_path``."""
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, TRAIN, *args], cwd=REPO, env=env(extra_env),
                            stdout=log, stderr=subprocess.STDOUT)


def run_train(args, extra_env=None, timeout=600):
    """Run ``pipelines/train.py`` to the end; returns (returncode, combined output)."""
    proc = subprocess.run([sys.executable, TRAIN, *args], cwd=REPO, env=env(extra_env),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout


def read_summary(model_dir):
    with open(os.path.join(model_dir, "summary.json")) as f:
        return json.load(f)


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports
