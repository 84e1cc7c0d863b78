"""``fit`` under tf.distribute on a CPU-only machine: MirroredStrategy over two logical CPU
devices, and MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1.

Both run in subprocesses: logical devices must be configured before TensorFlow initialises,
and each worker needs its own process and ``TF_CONFIG``.
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import SMALL_MODEL

REPO = Path(__file__).resolve().parents[1]
TINY = [*SMALL_MODEL, "data.spec=shapes:classes=2,train=64,val=16", "batch_size=16",
        "data.augment=none", "tensorboard=false", "verbose=0", "epochs=2"]
TIMEOUT = 240


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _fit_script(output, overrides, prelude=""):
    return prelude + textwrap.dedent(f"""
        import json
        from keras_resnet.training.fit import fit
        result = fit(None, output={str(output)!r}, overrides={overrides!r})
        print("METRICS " + json.dumps(result.metrics))
    """)


def _metrics(stdout: str) -> dict:
    line = [l for l in stdout.splitlines() if l.startswith("METRICS ")][-1]
    return json.loads(line[len("METRICS "):])


def _check_run(run: Path, metrics: dict, strategy: str):
    import keras

    assert metrics["strategy"] == strategy and metrics["replicas"] == 2
    assert metrics["epochs"] == 2 and math.isfinite(metrics["train_loss"])
    for name in ("config.yaml", "history.csv", "model.keras", "best.keras", "metrics.json"):
        assert (run / name).is_file(), name
    model = keras.models.load_model(run / "model.keras", compile=False)
    assert model.output_shape == (None, 2)


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    prelude = textwrap.dedent("""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    """)
    run = tmp_path / "mirrored"
    done = subprocess.run(
        [sys.executable, "-c", _fit_script(run, TINY + ["strategy=mirrored"], prelude)],
        capture_output=True, text=True, env=_env(), timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    _check_run(run, _metrics(done.stdout), "mirrored")


def test_a_time_budget_replan_retraces_the_step_under_mirrored_strategy(tmp_path):
    """A re-plan swaps the schedule and traces the distributed step again mid-run. The first
    plan (4 epochs) and the re-plan (6) are forced, so the check does not depend on speed."""
    prelude = textwrap.dedent("""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
        from keras_resnet.training import budget
        epoch = 600 / 4.5 / (1 + budget.EPOCH_MARGIN)       # 4 epochs fit in 10 minutes
        budget.time_training_steps = lambda *args: epoch / (4 + budget.VALIDATION_COST)
        budget.epochs_after_replan = lambda *args: 6
    """)
    run = tmp_path / "mirrored-budget"
    overrides = [o for o in TINY if not o.startswith("epochs=")] + [
        "strategy=mirrored", "epochs=8", "time_budget_minutes=10", "schedule.name=onecycle"]
    done = subprocess.run(
        [sys.executable, "-c", _fit_script(run, overrides, prelude)],
        capture_output=True, text=True, env=_env(), timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    metrics = _metrics(done.stdout)
    assert metrics["replicas"] == 2 and metrics["epochs"] == 6
    assert metrics["time_budget"]["replans"][0]["epochs_before"] == 4
    assert json.loads((run / "time_budget.json").read_text())["epochs"] == 6


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multiworker_strategy_with_two_local_workers(tmp_path):
    run = tmp_path / "multiworker"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers},
                                "task": {"type": "worker", "index": index}})
        env = _env(TF_CONFIG=tf_config, TMPDIR=str(scratch))
        script = _fit_script(run, TINY + ["strategy=multiworker"])
        processes.append(subprocess.Popen([sys.executable, "-c", script], env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    deadline = time.time() + TIMEOUT
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=max(1, deadline - time.time()))
            outputs.append((process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for code, out, err in outputs:
        assert code == 0, out[-2000:] + err[-3000:]
    chief_metrics, worker_metrics = _metrics(outputs[0][1]), _metrics(outputs[1][1])
    _check_run(run, chief_metrics, "multiworker")
    # Both workers trained the same synchronised model.
    assert worker_metrics["train_loss"] == chief_metrics["train_loss"]
    # The second worker kept only its resume state in the run directory; its scratch copy
    # of everything else is gone.
    assert (run / "checkpoints" / "backup-worker1" / "training_metadata.json").is_file()
    assert not list(scratch.glob("keras-resnet-worker-*"))
