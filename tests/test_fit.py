"""``keras_resnet.fit`` and ``keras-resnet fit`` end to end on the built-in ``shapes`` data:
learning, the run directory, refusal to overwrite, NaN handling, kill-and-resume, config
errors on the command line, and a ``model.keras`` that plain Keras loads."""
from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SMALL_MODEL
from keras_resnet.cli.main import cli
from keras_resnet.training.rundir import RunDirectory, read_history

REPO = Path(__file__).resolve().parents[1]
# 4 classes (chance 25%), 1,600 training images, ResNet-20 at half width (half the time of the
# full width on a 2-core CPU). 8 epochs: ResNet-20 sits near chance for 2-4 epochs before it
# takes off, and when depends on the seed and the CPU's kernels. After 8 epochs on an AVX2 CPU:
# 84.5% and 75.5% for seeds 0 and 1 (the full width: 84.5% and 79.5%).
LEARN = ["data.spec=shapes:classes=4,train=1600,val=200", "model.width_multiplier=0.5",
         "epochs=8", "batch_size=32", "optimizer.lr=0.05", "data.augment=none",
         "tensorboard=false", "verbose=0", "checkpoint.save_freq=20"]
# Just enough data to exercise the machinery.
TINY = [*SMALL_MODEL, "data.spec=shapes:classes=2,train=64,val=16", "batch_size=16",
        "data.augment=none", "tensorboard=false", "verbose=2"]


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    env.pop("TF_CONFIG", None)
    return env


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from keras_resnet.training.fit import fit

    run_dir = tmp_path_factory.mktemp("fit") / "run"
    result = fit(None, output=run_dir, overrides=LEARN)
    return result


def test_fit_learns_shapes_well_above_chance(trained):
    import keras

    assert trained.stopped == "completed"
    assert keras.config.dtype_policy().name == "float32"   # the run's precision did not leak
    assert trained.metrics["val_accuracy"] >= 0.5          # chance is 0.25
    assert trained.metrics["train_loss"] < trained.history[0]["loss"]


def test_run_directory_is_complete(trained):
    run = trained.run_dir
    for name in ("config.yaml", "history.csv", "best.keras", "model.keras", "metrics.json",
                 "curves.png", "checkpoints/last.keras",
                 "checkpoints/backup/training_metadata.json"):
        assert (run / name).is_file(), name
    assert not [p for p in run.rglob(".*") if p.is_file()], "temporary files left behind"
    rows = read_history(run / "history.csv")
    assert [r["epoch"] for r in rows] == list(range(8))
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= rows[0].keys()
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epochs",
                "wall_time_s", "images_per_second", "precision"):
        assert key in metrics, key
    assert metrics["epochs"] == 8 and metrics["val_accuracy"] == rows[-1]["val_accuracy"]
    assert metrics["precision"] in ("float32", "mixed_bfloat16", "mixed_float16")
    # The step-level backup also records each finished epoch.
    backup = json.loads((run / "checkpoints/backup/training_metadata.json").read_text())
    assert backup["epoch"] == 8

    import yaml

    from keras_resnet.models import read_metadata
    from keras_resnet.training.config import validate

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert validate(saved) == trained.config and saved["epochs"] == 8
    # Saved uncompiled: no optimizer state, and no schedule class plain Keras could not load.
    for name in ("best.keras", "model.keras"):
        with zipfile.ZipFile(run / name) as archive:
            assert not json.loads(archive.read("config.json")).get("compile_config"), name
            with h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as weights:
                assert "optimizer" not in weights, name
    meta = read_metadata(run / "best.keras")
    assert meta["class_names"] == ["circle", "square", "triangle", "cross"]
    assert meta["arch"] == "resnet20" and meta["image_size"] == [32, 32]
    assert meta["recipe"]["optimizer"]["lr"] == 0.05
    assert meta["best"]["value"] == max(r["val_accuracy"] for r in rows)


def test_model_loads_with_plain_keras_in_a_fresh_process(trained, tmp_path):
    from keras_resnet.data import load_data
    from keras_resnet.models import load_model

    images, _ = load_data("shapes:classes=4,train=8,val=0").numpy("train")
    np.save(tmp_path / "x.npy", images)
    expected = load_model(trained.run_dir / "model.keras")(images.astype("float32")).numpy()
    code = textwrap.dedent(f"""
        import sys, numpy as np, keras
        model = keras.models.load_model({str(trained.run_dir / 'model.keras')!r})
        assert not any(m.startswith("keras_resnet") for m in sys.modules), "imported keras_resnet"
        out = model.predict(np.load({str(tmp_path / 'x.npy')!r}).astype("float32"), verbose=0)
        np.save({str(tmp_path / 'y.npy')!r}, out)
        print(model.layers[-1].dtype_policy.name, model.compute_dtype)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(_env(), PYTHONPATH=""), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "float32"   # saved as a float32 model
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)


def test_saved_model_takes_one_tensor_not_a_list_of_one(trained):
    # Saved from ``inputs``/``outputs`` lists, a model reloads wanting a list of one: calling it
    # on a tensor warns, and rebuilding it for another precision once failed.
    model = keras.models.load_model(trained.run_dir / "model.keras", compile=False)
    assert not isinstance(model.input, (list, tuple))
    assert not isinstance(model.output, (list, tuple))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(np.zeros((1, *model.input.shape[1:]), "float32"))


def test_epochs_of_a_set_step_count_train_exactly_that_many_steps(tmp_path):
    """With ``steps_per_epoch`` the data repeats, and Keras runs whole compiled calls: 10
    steps an epoch at 8 steps per call would train 16. ``auto`` picks a divisor (5)."""
    from keras_resnet.training.fit import fit

    result = fit(None, output=tmp_path / "run",
                 overrides=[*TINY, "epochs=2", "steps_per_epoch=10", "verbose=0"])
    assert int(result.model.optimizer.iterations) == 2 * 10


def test_alternating_flip_epochs_are_one_pass_each(tmp_path):
    """With ``altflip`` one iteration of the training pipeline is two epochs (even, odd): fit
    must still count an epoch as one pass over the 64 images (4 steps of 16)."""
    from keras_resnet.training.fit import fit

    result = fit(None, output=tmp_path / "run",
                 overrides=[*TINY, "epochs=3", "data.augment=altflip+reflect", "verbose=0"])
    assert result.metrics["steps_per_epoch"] == 4
    assert int(result.model.optimizer.iterations) == 3 * 4


def test_second_fit_into_the_same_directory_refuses(trained):
    before = (trained.run_dir / "metrics.json").read_bytes()
    result = CliRunner().invoke(cli, ["fit", "--output", str(trained.run_dir), *LEARN])
    assert result.exit_code == 2
    assert "is not empty; pass --resume" in result.output
    assert (trained.run_dir / "metrics.json").read_bytes() == before


def test_resume_of_a_finished_run_has_nothing_to_do(trained):
    from keras_resnet.training.fit import fit

    again = fit(None, output=trained.run_dir, resume=True)
    assert again.stopped == "already_complete"
    assert again.metrics["val_accuracy"] == trained.metrics["val_accuracy"]


def test_plot_command_overlays_runs(trained, tmp_path):
    out = tmp_path / "both.png"
    result = CliRunner().invoke(cli, ["plot", str(trained.run_dir),
                                      str(trained.run_dir / "history.csv"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


class PoisonWeights:
    """A callback that turns one weight into NaN at the start of ``epoch``."""

    def __new__(cls, epoch):
        import keras

        class _Poison(keras.callbacks.Callback):
            def on_epoch_begin(self, current, logs=None):
                if current == epoch:
                    kernel = self.model.get_layer("stem_conv").kernel
                    kernel.assign(np.full(kernel.shape, np.nan, "float32"))

        return _Poison()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    import keras

    from keras_resnet.models import read_metadata
    from keras_resnet.training.fit import fit

    result = fit(None, output=tmp_path / "nan", overrides=TINY + ["epochs=5", "verbose=0"],
                 callbacks=[PoisonWeights(2)])
    assert result.stopped == "nan" and not result.ok
    assert result.metrics["nan_at"]["epoch"] == 2
    assert [r["epoch"] for r in result.history] == [0, 1]
    run = result.run_dir
    assert read_metadata(run / "checkpoints/last.keras")["epoch"] == 2
    backup = json.loads((run / "checkpoints/backup/training_metadata.json").read_text())
    assert backup["epoch"] == 2                       # resume restarts from the good state
    for name in ("checkpoints/last.keras", "best.keras", "model.keras"):
        model = keras.models.load_model(run / name, compile=False)
        assert all(np.isfinite(w).all() for w in model.get_weights()), name


def test_early_stopping_ends_the_run_and_resumes_with_its_state(tmp_path):
    """``min_delta=100`` makes every epoch after the first no gain: with patience 1 the run
    stops after its second epoch. Resumed with the same settings it has nothing to do; with
    patience 3 it trains on from the waited count it had (stopping after epoch 4), not from a
    fresh one (Keras's own callback would then run all 6)."""
    import keras

    from keras_resnet.training.fit import fit

    run = tmp_path / "early"
    stop = ["epochs=6", "early_stopping.patience=1", "early_stopping.min_delta=100",
            "verbose=0"]
    result = fit(None, output=run, overrides=[*TINY, *stop])
    assert result.stopped == "early_stopping"
    assert result.metrics["epochs"] == 2 and result.metrics["epochs_planned"] == 6
    assert [r["epoch"] for r in read_history(run / "history.csv")] == [0, 1]
    keras.models.load_model(run / "model.keras", compile=False)

    again = fit(None, output=run, resume=True, overrides=stop)
    assert again.stopped == "already_complete"
    assert [r["epoch"] for r in read_history(run / "history.csv")] == [0, 1]

    longer = fit(None, output=run, resume=True,
                 overrides=[*stop, "early_stopping.patience=3"])
    assert longer.stopped == "early_stopping"
    assert [r["epoch"] for r in read_history(run / "history.csv")] == [0, 1, 2, 3]


def test_early_stopping_replay_matches_keras_epoch_by_epoch():
    """The resumed callback's state after replaying epochs equals Keras's ``EarlyStopping``
    after seeing the same values live, for a min and a max monitor."""
    from types import SimpleNamespace

    from keras_resnet.training.callbacks import ResumableEarlyStopping

    losses = [1.0, 0.8, 0.85, 0.79, 0.9, 0.95, 0.7, 0.71, 0.72]
    for monitor, values in (("val_loss", losses), ("val_accuracy", [-v for v in losses])):
        live = keras.callbacks.EarlyStopping(monitor=monitor, patience=2, min_delta=0.005,
                                             mode="max" if "acc" in monitor else "min")
        live.set_model(SimpleNamespace(stop_training=False))
        live.on_train_begin()
        for epoch, value in enumerate(values):
            live.on_epoch_end(epoch, {monitor: value})
            rows = [{"epoch": e, monitor: v} for e, v in enumerate(values[:epoch + 1])]
            replayed = ResumableEarlyStopping(monitor=monitor, patience=2, min_delta=0.005,
                                              history_rows=rows)
            replayed.on_train_begin()
            assert (replayed.wait, replayed.best, replayed.best_epoch) == \
                (live.wait, live.best, live.best_epoch), (monitor, epoch)
            assert replayed.stopped_before == (live.stopped_epoch == epoch > 0), (monitor, epoch)
        assert live.stopped_epoch > 0               # the sequence does trip it


def test_ema_weights_are_what_the_final_model_holds(tmp_path):
    """With ``optimizer.ema`` Keras swaps the averaged weights in when training ends; the final
    model holds them and is scored on them. At momentum 0 the average is the last weights
    themselves, so ``model.keras`` equals ``checkpoints/last.keras``; at 0.5 it does not."""
    import keras

    from keras_resnet.training.fit import fit

    def weights(path):
        return keras.models.load_model(path, compile=False).get_weights()

    for momentum, same in ((0.0, True), (0.5, False)):
        run = tmp_path / f"ema{momentum}"
        result = fit(None, output=run, overrides=[*TINY, "epochs=2", "verbose=0",
                                                  "optimizer.ema=true",
                                                  f"optimizer.ema_momentum={momentum}"])
        assert result.metrics["averaged_weights"] == "ema"
        final, last = weights(run / "model.keras"), weights(run / "checkpoints/last.keras")
        equal = [np.array_equal(a, b) for a, b in zip(final, last)]
        assert all(equal) if same else not all(equal), momentum


def test_cli_prints_the_precision_it_chose_and_writes_tensorboard_logs(tmp_path):
    """``--precision auto`` prints its choice and why (the same as ``auto_precision`` on this
    machine); ``DIR/logs`` holds TensorBoard event files with each epoch's train and validation
    loss."""
    import tensorflow as tf

    from keras_resnet.training.precision import auto_precision

    run = tmp_path / "tb"
    args = ["fit", "--output", str(run), "--epochs", "2", *TINY, "tensorboard=true"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output[-3000:]
    policy, reason = auto_precision()
    assert f"Precision: {policy} (auto: {reason})" in result.output
    assert json.loads((run / "metrics.json").read_text())["precision"] == policy
    for side in ("train", "validation"):
        files = list((run / "logs" / side).glob("events.out.tfevents.*"))
        assert files, side
        losses = {event.step for path in files for event in tf.compat.v1.train.summary_iterator(
            str(path)) for value in event.summary.value if value.tag == "epoch_loss"}
        assert losses == {0, 1}, side


def test_kill_then_resume_continues_where_it_stopped(tmp_path):
    run = tmp_path / "killed"
    args = [sys.executable, "-m", "keras_resnet", "fit", "--output", str(run), "--epochs", "6",
            "steps_per_epoch=4", *TINY]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=_env(), text=True)
    deadline = time.time() + 240
    try:
        while RunDirectory(run).resume_epoch() < 2:       # two epochs backed up
            assert process.poll() is None, process.stdout.read()[-3000:]
            assert time.time() < deadline, "no checkpointed epochs in time"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    backup = json.loads((run / "checkpoints/backup/training_metadata.json").read_text())
    done_before = backup["epoch"]
    assert 2 <= done_before < 6
    rows_before = read_history(run / "history.csv")[:done_before]
    assert not (run / "model.keras").exists()

    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=_env(),
                             timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Resuming at epoch {done_before + 1} of 6" in resumed.stdout
    rows = read_history(run / "history.csv")
    assert [r["epoch"] for r in rows] == list(range(6))
    assert rows[:done_before] == rows_before           # earlier epochs kept, not retrained
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == done_before and metrics["epochs"] == 6
    # The optimizer's step count was restored: the learning rate of every resumed epoch is
    # the schedule's value after (epoch + 1) * 4 steps, not a restarted schedule's.
    from keras_resnet.training.config import load_yaml
    from keras_resnet.training.schedules import build_schedule, lr_at

    config = load_yaml(run / "config.yaml")
    schedule = build_schedule(config["schedule"], config["optimizer"]["lr"], 6, 4)
    for row in rows:
        assert math.isclose(row["learning_rate"], lr_at(schedule, (row["epoch"] + 1) * 4),
                            rel_tol=1e-4, abs_tol=1e-9), row


def test_deterministic_runs_repeat_exactly(tmp_path):
    """Two runs with the same seed and op determinism (augmentation on) give the same
    history, to the last bit. In a subprocess: determinism is process-wide."""
    overrides = [*TINY, "data.augment=cifar", "verbose=0", "epochs=2", "seed=3",
                 "deterministic=true"]
    code = textwrap.dedent(f"""
        from keras_resnet.training.fit import fit
        for name in ("a", "b"):
            fit(None, output={str(tmp_path)!r} + "/" + name, overrides={overrides!r})
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    histories = [read_history(tmp_path / name / "history.csv") for name in ("a", "b")]
    keys = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
    assert [[r[k] for k in keys] for r in histories[0]] == \
        [[r[k] for k in keys] for r in histories[1]]
    assert len(histories[0]) == 2


def test_config_errors_exit_2_with_one_line_each(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["fit", "--output", str(tmp_path / "a"), "epochs=0",
                                 "optimizer.lr=fast", "schedule.name=linear"])
    assert result.exit_code == 2
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 3 and all(l.startswith("Error: ") for l in lines)
    result = runner.invoke(cli, ["fit", "--output", str(tmp_path / "b"), "optimizer.wd=1"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: optimizer.wd: unknown key"
    result = runner.invoke(cli, ["fit", "--config", "nope", "--output", str(tmp_path / "c")])
    assert result.exit_code == 2 and result.output.startswith("Error: no such config file")
    result = runner.invoke(cli, ["fit", "--arch", "resnet21", "-o", str(tmp_path / "d")])
    assert result.exit_code == 2 and "unknown architecture 'resnet21'" in result.output
    result = runner.invoke(cli, ["fit", "--output", str(tmp_path / "e"), "--resume"])
    assert result.exit_code == 2 and "no config.yaml" in result.output
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_fit_help_lists_the_options():
    result = CliRunner().invoke(cli, ["fit", "--help"])
    assert result.exit_code == 0
    for option in ("--arch", "--data", "--config", "--epochs", "--batch-size", "--lr",
                   "--precision", "--strategy", "--output", "--resume", "--seed",
                   "--deterministic", "KEY=VALUE"):
        assert option in result.output
