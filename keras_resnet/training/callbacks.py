"""Callbacks of a training run, and the list ``fit`` uses.

Keras provides most of them (``BackupAndRestore``, ``EarlyStopping``, ``TensorBoard``, the
progress bar). Written here is only what Keras lacks:

- ``NanGuard``: like ``TerminateOnNaN``, but it also tells the saving callbacks that the
  weights are bad, so no checkpoint or resume state is ever overwritten with NaNs (Keras calls
  ``on_epoch_end`` even for the epoch a NaN stopped).
- ``RunCheckpoints``: ``best.keras`` and ``checkpoints/last.keras`` through
  ``keras_resnet.models.save_model`` (atomic, float32, with class names and recipe), which
  ``ModelCheckpoint`` cannot do.
- ``History``: ``history.csv`` rewritten atomically each epoch (``CSVLogger`` appends line by
  line, so a kill can leave half a row), with the learning rate and epoch time.
- ``SafeBackupAndRestore``: ``BackupAndRestore`` that skips saving once the NaN guard fired.
- ``ResumableEarlyStopping``: ``EarlyStopping`` that a resumed run continues where the earlier
  sessions left it (Keras's starts every ``fit`` with no best value and no epochs waited).
- ``Lookahead``: airbench's Lookahead on every weight (Keras's optimizer EMA has neither the
  periodic pull-back on a schedule nor the BatchNorm statistics).
- ``BudgetReplan``: a time-budgeted run's plan made again from measured epochs (Keras's
  ``fit`` fixes its epoch count and its step function's schedule when it starts).
"""
from __future__ import annotations

import math
import time

import keras
import numpy as np

from keras_resnet.training import budget
from keras_resnet.training.checkpoints import InferenceSaver
from keras_resnet.training.rundir import read_history, write_history


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def weights_finite(model) -> bool:
    """Whether every trainable weight is finite (one fused reduction, milliseconds)."""
    import tensorflow as tf

    variables = [v.value if hasattr(v, "value") else v for v in model.trainable_variables]
    if not variables:
        return True
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables]))


class NanGuard(keras.callbacks.Callback):
    """Stop training at the first non-finite loss or weight, and remember where.

    Weights are checked too, at every epoch end and before every backup: TensorFlow's fused
    BatchNorm kernel on CPU turns NaN inputs into finite outputs, so a diverged layer can hide
    behind a finite loss.
    """

    def __init__(self):
        super().__init__()
        self.tripped = False
        self.epoch = None
        self.step = None
        self._epoch = 0

    def trip(self, epoch, step=None):
        if not self.tripped:
            self.tripped, self.epoch, self.step = True, epoch, step
            self.model.stop_training = True

    def check_weights(self, step=None) -> bool:
        """Trip on non-finite weights; returns whether it is safe to save."""
        if not self.tripped and not weights_finite(self.model):
            self.trip(self._epoch, step)
        return not self.tripped

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs and not _finite(logs["loss"]):
            self.trip(self._epoch, batch)

    def on_epoch_end(self, epoch, logs=None):
        if logs and "loss" in logs and not _finite(logs["loss"]):
            self.trip(epoch)
        self.check_weights()


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that never backs up weights after the NaN guard has fired, and
    that with a step-level ``save_freq`` also backs up at the end of every epoch.

    (Keras's step-level saves record the epoch in progress, so a run killed after the last
    save of an epoch would otherwise repeat that whole epoch when resumed.)
    """

    def __init__(self, backup_dir, nan_guard: NanGuard, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.nan_guard = nan_guard

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.save_freq != "epoch":
            self._save_model()

    def _save_model(self):
        if self.nan_guard.check_weights():
            super()._save_model()


class LearningRate(keras.callbacks.Callback):
    """Adds ``learning_rate`` (at the end of the epoch) and ``epoch_time`` to the logs, and
    times the training steps apart from validation for the throughput figure."""

    def __init__(self):
        super().__init__()
        self.train_seconds = 0.0
        self.train_steps = 0
        self._epoch_start = self._test_start = 0.0
        self._test_seconds = 0.0
        self._last_batch = -1

    def current_lr(self) -> float:
        optimizer = self.model.optimizer
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        return float(keras.ops.convert_to_numpy(inner.learning_rate))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._test_seconds = 0.0
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        self._last_batch = batch

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self._test_seconds += time.perf_counter() - self._test_start

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._epoch_start
        self.train_seconds += elapsed - self._test_seconds
        self.train_steps += self._last_batch + 1
        if logs is not None:
            logs["learning_rate"] = self.current_lr()
            logs["epoch_time"] = elapsed


class History(keras.callbacks.Callback):
    """``history.csv``: the rows of earlier sessions (up to ``initial_epoch``) plus one row per
    epoch of this one, rewritten atomically after each epoch."""

    COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")

    def __init__(self, path, initial_epoch: int = 0):
        super().__init__()
        self.path = path
        self.rows = [r for r in read_history(path) if r.get("epoch", 0) < initial_epoch]

    def on_train_begin(self, logs=None):
        write_history(self.path, self.rows)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch}
        for key, value in (logs or {}).items():
            try:
                row[key] = float(np.asarray(value))
            except (TypeError, ValueError):
                continue
        ordered = {k: row[k] for k in self.COLUMNS if k in row}
        ordered.update({k: v for k, v in row.items() if k not in ordered})
        self.rows = [r for r in self.rows if r["epoch"] != epoch] + [ordered]
        write_history(self.path, self.rows)


def resolve_mode(monitor: str, mode: str = "auto") -> str:
    """``min`` or ``max`` for ``monitor``: ``auto`` maximises accuracies and AUCs and minimises
    the rest (losses), as Keras's callbacks do for these names."""
    if mode != "auto":
        return mode
    return "max" if ("acc" in monitor or "auc" in monitor) else "min"


class RunCheckpoints(keras.callbacks.Callback):
    """Save ``last`` every epoch and ``best`` when ``monitor`` improves (never after a NaN).

    ``history`` (earlier rows) seeds the best value so a resumed run keeps its best model.
    """

    def __init__(self, *, last_path, best_path, monitor: str, mode: str, metadata: dict,
                 nan_guard: NanGuard, history_rows=()):
        super().__init__()
        self.last_path, self.best_path = last_path, best_path
        self.monitor = monitor
        self.better = np.greater if resolve_mode(monitor, mode) == "max" else np.less
        self.metadata = metadata
        self.nan_guard = nan_guard
        self.best = None
        self.best_epoch = None
        for row in history_rows:
            value = row.get(monitor)
            if _finite(value) and (self.best is None or self.better(value, self.best)):
                self.best, self.best_epoch = float(value), int(row["epoch"])
        self.last_saved_epoch = None
        self._saver = None

    def on_train_begin(self, logs=None):
        self._saver = InferenceSaver(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard.tripped:
            return
        logs = logs or {}
        meta = dict(self.metadata, epoch=epoch + 1)
        value = logs.get(self.monitor)
        if _finite(value) and (self.best is None or self.better(float(value), self.best)):
            self.best, self.best_epoch = float(value), epoch
            self._saver.save(self.best_path, dict(meta, best=self.monitor_record()))
        self._saver.save(self.last_path, meta)
        self.last_saved_epoch = epoch

    def monitor_record(self) -> dict:
        return {"monitor": self.monitor, "value": self.best, "epoch": self.best_epoch}


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's ``EarlyStopping``, continued across a resume.

    Keras's callback starts each ``fit`` with no best value and no epochs waited, so a run
    resumed after a crash would wait ``patience`` epochs afresh. This one first replays the
    monitored values of the earlier epochs (``history_rows``, from ``history.csv``) through
    Keras's own rule. ``stopped_before`` says whether those epochs had already ended the run
    under the current settings (``fit`` then has nothing left to do).
    """

    def __init__(self, *, history_rows=(), **kwargs):
        kwargs["mode"] = resolve_mode(kwargs.get("monitor", "val_loss"),
                                      kwargs.get("mode", "auto"))
        super().__init__(**kwargs)
        self.history_rows = [dict(row) for row in history_rows]
        self.stopped_before = self._replay()

    def _replay(self) -> bool:
        if self.monitor_op is None:
            self._set_monitor_op()
        self.wait, self.best, self.best_epoch = 0, None, 0
        stopped = False
        for row in self.history_rows:
            current, epoch = row.get(self.monitor), int(row["epoch"])
            if not _finite(current) or epoch < self.start_from_epoch:
                continue
            self.wait += 1
            if self._is_improvement(current, self.best):
                self.best, self.best_epoch = float(current), epoch
                if self.baseline is None or self._is_improvement(current, self.baseline):
                    self.wait = 0
                stopped = False
                continue
            stopped = self.wait >= self.patience and epoch > 0
        return stopped

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._replay()


class Lookahead(keras.callbacks.Callback):
    """Lookahead (Zhang et al. 2019) as airbench uses it: every ``every`` steps the slow copy
    of the weights moves toward the trained ("fast") ones, ``slow = d * slow + (1 - d) * fast``,
    and the fast weights restart from it. ``d`` rises as ``decay * (step / total)**3``: no
    pull-back early, when big steps are wanted, and a strong one as the rate anneals. Every
    float weight takes part, BatchNorm statistics included; training ends on the slow copy.

    Syncs happen at the end of a compiled call (``steps_per_execution`` steps), so ``every`` is
    rounded up to whole calls. A resumed run starts its slow copy from the restored weights.
    """

    def __init__(self, every: int, decay: float, steps_per_epoch: int | None = None):
        super().__init__()
        self.every = int(every)
        self.decay = float(decay)
        self.steps_per_epoch = steps_per_epoch   # else the steps Keras reports
        self.syncs = 0
        self._epoch = 0
        self._last = None
        self._slow = None

    def _variables(self):
        return [v for v in self.model.weights if "float" in str(v.dtype)]

    def _steps_per_epoch(self) -> int:
        return int(self.steps_per_epoch or self.params["steps"])

    def _step(self, batch: int) -> int:
        return self._epoch * self._steps_per_epoch() + batch + 1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._slow is None:
            self._slow = [np.array(keras.ops.convert_to_numpy(v)) for v in self._variables()]
            self._last = self._step(-1) // self.every

    def on_train_batch_end(self, batch, logs=None):
        step = self._step(batch)
        if step // self.every <= self._last:
            return
        self._last = step // self.every
        total = self._steps_per_epoch() * int(self.params["epochs"])
        self.sync(self.decay * min(1.0, step / total) ** 3)

    def sync(self, decay: float) -> None:
        """Move the slow copy toward the current weights by ``1 - decay``, then restart the
        current weights from it (``decay=1`` only copies the slow weights back)."""
        for variable, slow in zip(self._variables(), self._slow):
            slow *= decay
            slow += (1.0 - decay) * keras.ops.convert_to_numpy(variable)
            variable.assign(slow)
        self.syncs += 1

    def on_train_end(self, logs=None):
        if self._slow is not None:
            self.sync(1.0)


class BudgetReplan(keras.callbacks.Callback):
    """Plans a time-budgeted run's epochs again at the end of each epoch where
    ``keras_resnet.training.budget.replan_due`` says so, from the latest epochs' time end to
    end, and stops training at the plan. ``fit`` must be given the most epochs allowed.

    On a new count it swaps in ``schedule_for(epochs)`` and has Keras trace the step again (the
    schedule's constants are part of the traced step), and sets ``params["epochs"]``, which
    every callback of the run shares (Lookahead's ramp reads it), and the progress bar's copy.
    Every re-plan is passed to ``on_replan(epochs, record)``. Place it last, so the timed epochs
    include every other callback's work. The first epoch and each one after a new count
    include tracing the step, so they are not timed.
    """

    def __init__(self, planned: int, max_epochs: int, budget_seconds: float, started: float,
                 schedule_for, on_replan, *, progbar=None):
        super().__init__()
        self.planned = int(planned)
        self.max_epochs = int(max_epochs)
        self.budget_seconds = float(budget_seconds)
        self.started = started
        self.schedule_for = schedule_for
        self.on_replan = on_replan
        self.progbar = progbar
        self.epoch_seconds = []
        self._last_epoch_end = None       # the first epoch, with its tracing, is not timed

    def _set_epochs(self, epochs: int) -> None:
        self.planned = epochs
        self.params["epochs"] = epochs
        if self.progbar is not None:
            self.progbar.epochs = epochs

    def on_train_begin(self, logs=None):
        self._set_epochs(self.planned)

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        done = epoch + 1
        retraced = False
        if self._last_epoch_end is not None:
            self.epoch_seconds.append(now - self._last_epoch_end)
        if self.epoch_seconds and budget.replan_due(done, self.planned, self.max_epochs):
            elapsed = now - self.started
            plan = budget.replanned_epochs(self.planned, self.epoch_seconds, elapsed, done,
                                           self.budget_seconds, self.max_epochs)
            epochs = plan["epochs"]
            record = {"after_epoch": done, "epoch_seconds": round(plan["epoch_seconds"], 1),
                      "elapsed_seconds": round(elapsed, 1), "epochs_before": self.planned,
                      "proposed": plan["proposed"], "epochs": epochs}
            if epochs != self.planned:
                self.model.optimizer.learning_rate = self.schedule_for(epochs)
                self.model.make_train_function(force=True)
                self._set_epochs(epochs)
                retraced = True
            self.on_replan(epochs, record)
        # The epoch after a new count traces the step again: like the first, it is not timed
        # (with epochs of a few seconds the tracing made them look slower, and each re-plan
        # cut the count again).
        self._last_epoch_end = None if retraced else time.perf_counter()
        if done >= self.planned:
            self.model.stop_training = True
