"""``fit``: train a zoo model from a config and write a run directory.

The steps are small public functions so fine-tuning and tuning can reuse them:
``setup_runtime`` (strategy, seed, determinism, precision: before anything else touches
TensorFlow), ``load_training_data``, ``build_model``, ``compile_for_training`` (optimizer,
schedule, loss, metrics), ``training_callbacks`` and ``train`` (``model.fit`` into a run
directory, then the final model, metrics and curves). ``fit`` chains them.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from keras_resnet.training import config as config_module
from keras_resnet.training.budget import (BUDGET_FILE, REPLAN_AFTER_EPOCH, read_decision,
                                          replan_due, write_decision)
from keras_resnet.training.config import resolve_config, resume_config, save_config
from keras_resnet.training.rundir import RunDirectory, default_output, read_history, write_json

# Throughput of ResNets on a CPU barely changes past 8 steps per compiled call (measured
# 1 vs 16 at batch 128: within noise), while finer steps keep the progress bar and step-level
# backups responsive.
AUTO_STEPS_PER_EXECUTION = 8


@dataclass
class Runtime:
    """What ``setup_runtime`` decided: the distribution and the precision."""

    distribution: object
    precision: str
    precision_reason: str
    onednn: bool | None = None

    @property
    def strategy(self):
        return self.distribution.strategy


@dataclass
class FitResult:
    """What a run produced. ``stopped`` is ``completed``, ``early_stopping``, ``nan`` or
    ``already_complete`` (a resumed run that had nothing left to do)."""

    run_dir: Path
    metrics: dict
    history: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    model: object = None
    stopped: str = "completed"

    @property
    def ok(self) -> bool:
        return self.stopped != "nan"


def _say(message: str, verbose: int = 1) -> None:
    if verbose:
        print(message, flush=True)


# -- runtime ------------------------------------------------------------------------------------

def setup_runtime(config: dict) -> Runtime:
    """Strategy first (a multi-worker strategy must exist before other TensorFlow work), then
    seeds, op determinism and the global dtype policy."""
    import keras
    import tensorflow as tf

    from keras_resnet.runtime import onednn_enabled
    from keras_resnet.training.distribute import make_strategy
    from keras_resnet.training.precision import apply_precision, choose_precision

    distribution = make_strategy(config["strategy"])
    if config.get("seed") is not None:
        keras.utils.set_random_seed(int(config["seed"]))
    if config.get("deterministic"):
        tf.config.experimental.enable_op_determinism()
    precision, reason = choose_precision(config["precision"])
    apply_precision(precision)
    return Runtime(distribution, precision, reason, onednn_enabled())


def load_training_data(config: dict):
    """``load_data`` with the config's ``data`` section, one-hot labels for the loss."""
    from keras_resnet.data import load_data

    data = config["data"]
    return load_data(
        data["spec"], batch_size=config["batch_size"], image_size=data["image_size"],
        val_split=data["val_split"], seed=config["seed"] or 0,
        augment=None if data["augment"] in (None, "none") else data["augment"],
        mixup=data["mixup"], cutmix=data["cutmix"], one_hot=True, cache=data["cache"],
        crop_padding=data.get("crop_padding"), split_seed=data["split_seed"])


# model settings that fit applies to the built model, not create_model arguments.
FIT_TIME_MODEL_KEYS = ("whitening_eps",)


def build_model(config: dict, data):
    """The zoo model of ``config['arch']`` for ``data``'s classes and image size."""
    from keras_resnet.models import create_model

    options = {k: v for k, v in config["model"].items()
               if v is not None and k not in FIT_TIME_MODEL_KEYS}
    return create_model(config["arch"], num_classes=data.num_classes,
                        input_shape=tuple(data.image_shape), **options)


def _choose_epochs_for_budget(model, config: dict, train_ds, steps: int, data,
                              started: float) -> dict:
    """Time the compiled model's steps and pick the epochs that fit the budget
    (``keras_resnet.training.budget``). Returns the decision recorded in the run directory."""
    from keras_resnet.training.budget import (epochs_within_budget, estimate_epoch_seconds,
                                              time_training_steps)

    step_seconds = time_training_steps(model, train_ds, int(model.steps_per_execution))
    epoch_seconds = estimate_epoch_seconds(step_seconds, steps, data.num_examples.get("val", 0),
                                           config["batch_size"])
    budget_seconds = 60.0 * config["time_budget_minutes"]
    elapsed = time.perf_counter() - started
    epochs = epochs_within_budget(budget_seconds, elapsed, epoch_seconds, config["epochs"])
    return {"minutes": config["time_budget_minutes"], "epochs": epochs,
            "max_epochs": config["epochs"], "step_seconds": round(step_seconds, 4),
            "epoch_seconds_estimate": round(epoch_seconds, 1),
            "seconds_before_training": round(elapsed, 1)}


def _budget_replan_callbacks(config: dict, max_epochs: int, decision: dict, meta: dict,
                             steps: int, started: float, run: RunDirectory, verbose) -> list:
    """``BudgetReplan`` and the progress bar whose epoch count it keeps up to date. A new plan
    is recorded in ``decision`` (and ``time_budget.json``) and in the checkpoints' recipe."""
    import keras

    from keras_resnet.training.callbacks import BudgetReplan
    from keras_resnet.training.schedules import build_schedule

    def schedule_for(epochs):
        return build_schedule(config["schedule"], config["optimizer"]["lr"], epochs, steps)

    def replanned(epochs, record):
        decision["epochs"] = epochs
        decision.setdefault("replans", []).append(record)
        meta["recipe"] = dict(meta["recipe"], epochs=epochs)
        write_decision(run.path / BUDGET_FILE, decision)
        if epochs != record["epochs_before"]:
            _say(f"Time budget: epochs of {record['epoch_seconds']:.0f} s lately; {epochs} "
                 f"epochs in all (planned {record['epochs_before']})", verbose)

    progbar = keras.callbacks.ProgbarLogger()
    replan = BudgetReplan(config["epochs"], max_epochs, 60.0 * config["time_budget_minutes"],
                          started, schedule_for, replanned, progbar=progbar)
    return [progbar, replan]      # the epoch's line printed before the re-plan's


def _init_data_dependent_layers(model, data, verbose, whitening_eps: float) -> None:
    """Fit a patch-whitening stem, if the model has one, to un-augmented training images."""
    from keras_resnet.models.whitening import (init_patch_whitening, sample_images,
                                               whitening_layer)

    if whitening_layer(model) is None:
        return
    images = sample_images(data.dataset("train", training=False), data.num_examples["train"])
    init_patch_whitening(model, images, whitening_eps)
    _say(f"Patch whitening: stem filters fitted to {len(images):,} training images "
         f"(eps {whitening_eps:g})", verbose)


def outputs_probabilities(model) -> bool:
    """Whether the model ends in a softmax (else the loss takes logits)."""
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", str(activation)) == "softmax"


def steps_per_epoch_of(config: dict, data) -> tuple[int, bool]:
    """``(steps, repeat)``: optimizer steps per epoch, and whether the training set must be
    repeated to provide them (``steps_per_epoch`` differs from one pass over the data)."""
    import tensorflow as tf

    passes = getattr(data, "train_passes", 1)
    batches = int(tf.data.experimental.cardinality(data.train)) // passes
    known = batches > 0
    if not known:
        # A file pipeline that may skip unreadable images: count from the examples, and
        # repeat so an epoch is always that many steps (Keras would warn at every end).
        batches = max(1, math.ceil(data.num_examples["train"] / config["batch_size"]))
    cap = config.get("steps_per_epoch")
    if (cap is None or cap == batches) and known and passes == 1:
        return batches, False
    # Repeated, Keras keeps one iterator across epochs: with the alternating flip's two
    # passes per iteration, epochs take them in turn.
    return int(cap or batches), True


def resolve_steps_per_execution(config: dict, steps_per_epoch: int, distributed=False) -> int:
    """Steps per compiled call: the config's value (``auto``: 8), lowered to the largest number
    that divides the steps of an epoch and an integer ``checkpoint.save_freq``.

    Keras 3.15 runs whole calls only: with 50 steps per epoch and 8 per call it trains 56 steps
    an epoch, so epochs, the learning-rate schedule and step-level backups would all drift.
    Under a tf.distribute strategy it is 1: Keras 3.15's multi-step loop fails there ("You must
    feed a value for placeholder tensor").
    """
    if distributed:
        return 1
    value = config["steps_per_execution"]
    wanted = AUTO_STEPS_PER_EXECUTION if value == "auto" else int(value)
    save_freq = config["checkpoint"]["save_freq"]
    # The steps per call must divide both, so they divide their greatest common divisor.
    common = math.gcd(steps_per_epoch, save_freq if isinstance(save_freq, int) else 0)
    return max(d for d in range(1, min(wanted, common) + 1) if common % d == 0)


def compile_for_training(model, config: dict, steps_per_epoch: int, *, optimizer_hook=None,
                         distributed: bool = False):
    """Compile ``model`` with the config's optimizer, schedule, loss and metrics.

    ``optimizer_hook(optimizer, model)`` runs before ``compile`` (fine-tuning uses it for
    per-layer learning rates). Returns the schedule (or float learning rate).
    """
    import keras

    from keras_resnet.training.optimizers import build_optimizer, scale_bn_bias_rates
    from keras_resnet.training.schedules import build_schedule

    schedule = build_schedule(config["schedule"], config["optimizer"]["lr"], config["epochs"],
                              steps_per_epoch)
    optimizer = build_optimizer(config["optimizer"], schedule)
    scale_bn_bias_rates(optimizer, model, config["optimizer"]["bn_bias_lr_multiplier"])
    if optimizer_hook is not None:
        optimizer_hook(optimizer, model)
    loss = keras.losses.CategoricalCrossentropy(
        from_logits=not outputs_probabilities(model), label_smoothing=config["label_smoothing"])
    metrics = ["accuracy"]
    if model.output_shape[-1] >= 100:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy"))
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics,
                  steps_per_execution=resolve_steps_per_execution(config, steps_per_epoch,
                                                                  distributed),
                  jit_compile=bool(config["jit_compile"]))
    return schedule


def resolve_verbose(config: dict) -> int:
    if config["verbose"] != "auto":
        return int(config["verbose"])
    return 1 if sys.stdout.isatty() else 2


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


# -- callbacks ----------------------------------------------------------------------------------

@dataclass
class RunCallbacks:
    callbacks: list
    nan_guard: object
    timer: object
    checkpoints: object
    early_stopping: object


def monitored_name(name: str, has_val: bool) -> str:
    """A monitored metric's name in the logs: ``val_loss`` is ``loss`` when nothing is held out."""
    return name if has_val or not name.startswith("val_") else name[len("val_"):]


def early_stopping(config: dict, history_rows, has_val: bool):
    """The run's ``ResumableEarlyStopping`` (seeded with ``history_rows``), or None when off."""
    from keras_resnet.training.callbacks import ResumableEarlyStopping

    settings = config["early_stopping"]
    if not settings["patience"]:
        return None
    return ResumableEarlyStopping(monitor=monitored_name(settings["monitor"], has_val),
                                  patience=settings["patience"],
                                  min_delta=settings["min_delta"], history_rows=history_rows)


def training_callbacks(run: RunDirectory, config: dict, *, metadata: dict, has_val: bool,
                       initial_epoch: int, extra=(), steps_per_epoch: int | None = None
                       ) -> RunCallbacks:
    """The callbacks of a run, in the order they must see each epoch's logs."""
    import keras

    from keras_resnet.training.callbacks import (
        History, LearningRate, Lookahead, NanGuard, RunCheckpoints, SafeBackupAndRestore)

    nan_guard = NanGuard()
    timer = LearningRate()
    history = History(run.history, initial_epoch)
    checkpoints = RunCheckpoints(
        last_path=run.last, best_path=run.best,
        monitor=monitored_name(config["checkpoint"]["monitor"], has_val),
        mode=config["checkpoint"]["mode"], metadata=metadata, nan_guard=nan_guard,
        history_rows=history.rows)
    callbacks = [nan_guard, timer, checkpoints, history]
    if config["optimizer"]["lookahead_every"]:
        callbacks.insert(1, Lookahead(config["optimizer"]["lookahead_every"],
                                      config["optimizer"]["lookahead_decay"],
                                      steps_per_epoch=steps_per_epoch))
    early = early_stopping(config, history.rows, has_val)
    if early is not None:
        callbacks.append(early)
    if config["tensorboard"] and tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(
            log_dir=str(run.logs), write_graph=False, profile_batch=0))
    callbacks.extend(extra)
    # Last, so a backup is taken only after everything else has recorded the epoch.
    callbacks.append(SafeBackupAndRestore(
        str(run.backup_dir), nan_guard, save_freq=config["checkpoint"]["save_freq"],
        double_checkpoint=True, delete_checkpoint=False))
    return RunCallbacks(callbacks, nan_guard, timer, checkpoints, early)


# -- the run ------------------------------------------------------------------------------------

def _distribute_options(dataset):
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _fix_multiworker_build(model) -> None:
    """Work around Keras 3.15 under ``MultiWorkerMirroredStrategy``.

    Before training, Keras builds the metrics from a first batch that it MEAN-reduces across
    replicas (``Trainer._maybe_symbolic_build``); the multi-worker strategy cannot reduce the
    ``(images, labels)`` tuple and fails ("Attempt to convert a value (PerReplica...)").
    Only shapes and dtypes matter for that build, so this instance takes the first local
    replica's batch instead.
    """
    import tensorflow as tf

    strategy = model.distribute_strategy

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(local, next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build


def _with_known_length(dataset, examples, batch_size):
    """A dataset whose cardinality TensorFlow cannot know (a file pipeline that skips
    unreadable images) made exactly ``ceil(examples / batch_size)`` batches long, so Keras
    neither warns that it "ran out of data" nor reuses an exhausted iterator. Only when
    files broke after the scan does it repeat a few images."""
    import tensorflow as tf

    if dataset is None or int(tf.data.experimental.cardinality(dataset)) > 0 or not examples:
        return dataset
    batches = max(1, math.ceil(examples / batch_size))
    return dataset.repeat().take(batches).apply(tf.data.experimental.assert_cardinality(batches))


def _train_from_epoch(data, epoch: int):
    """The training pipeline for a run starting at ``epoch`` (data objects without
    ``train_from_epoch`` just have ``train``)."""
    starting = getattr(data, "train_from_epoch", None)
    return starting(epoch) if starting is not None else data.train


def _describe_data(data) -> str:
    counts = " / ".join(f"{n} {split}" for split, n in data.num_examples.items() if n)
    h, w = data.image_shape[:2]
    return f"{data.spec}: {data.num_classes} classes, {counts} images at {h}x{w}"


def _final_metrics(rows: list, keys=("loss", "accuracy", "val_loss", "val_accuracy",
                                     "top5_accuracy", "val_top5_accuracy")) -> dict:
    if not rows:
        return {}
    last = rows[-1]
    return {f"{'train_' if not k.startswith('val_') else ''}{k}": last[k]
            for k in keys if k in last and math.isfinite(last[k])}


def fit(config=None, *, output=None, resume: bool = False, overrides=None, model=None,
        data=None, callbacks=(), optimizer_hook=None, metadata=None, arch_name=None) -> FitResult:
    """Train a ResNet and write a run directory.

    Args:
        config: a recipe name (``"cifar10_fast"``), a YAML path, a dict (partial: it is laid
            over the defaults) or ``None`` for the default quick-start recipe.
        output: the run directory (default ``runs/ARCH-TIMESTAMP``). A fresh run needs it
            absent or empty.
        resume: continue the run in ``output`` from its last backup (after a crash or kill);
            only ``RESUMABLE_KEYS`` (e.g. ``epochs``) may differ from the saved config.
        overrides: ``{"optimizer.lr": 0.05}`` or ``["optimizer.lr=0.05"]``.
        model: a ``keras.Model`` to train instead of ``config['arch']``, or a function
            ``data -> keras.Model``; a function is called after the precision policy is set
            and inside the strategy scope, which a mixed-precision or distributed run needs.
        data: an ``ImageData`` to train on instead of ``config['data']``.
        callbacks: more Keras callbacks.
        optimizer_hook: ``hook(optimizer, model)`` before compiling.
        metadata: extra metadata saved in the run's ``.keras`` files.
        arch_name: the architecture name recorded in metadata (default ``config['arch']``).

    Returns a ``FitResult`` (``run_dir``, ``metrics``, ``history``, ``model``, ``stopped``).
    """
    started = time.perf_counter()
    if resume:
        if output is None:
            raise ValueError("--resume needs --output, the run directory to continue")
        run = RunDirectory(output)
        run.check_resumable()
        saved = config_module.load_yaml(run.real / "config.yaml")
        config = resume_config(saved, config, overrides)
    else:
        config = resolve_config(config, overrides)
        output = output or default_output(config["arch"])
        RunDirectory(output).check_new()

    import keras

    previous_policy = keras.config.dtype_policy()
    runtime = setup_runtime(config)
    dist = runtime.distribution
    run = RunDirectory(output, scratch=not dist.is_chief, worker_index=dist.worker_index)
    verbose = resolve_verbose(config) if dist.is_chief else 0
    try:
        return _run(config, run, runtime, verbose, resume, started, model=model, data=data,
                    callbacks=callbacks, optimizer_hook=optimizer_hook, metadata=metadata,
                    arch_name=arch_name)
    finally:
        run.cleanup()
        # The precision is the run's, not the caller's: models built later are unaffected.
        keras.config.set_dtype_policy(previous_policy)


def _finished_before(run: RunDirectory, config: dict, initial_epoch: int) -> str | None:
    """Why a resumed run has nothing left to do (it trained all its epochs, or early stopping
    had ended it under the current settings), or None."""
    if not (run.model.is_file() and run.metrics.is_file()):
        return None
    if initial_epoch >= config["epochs"]:
        return f"the run already finished its {config['epochs']} epochs."
    earlier = [r for r in read_history(run.history) if r["epoch"] < initial_epoch]
    early = early_stopping(config, earlier, has_val=any("val_loss" in r for r in earlier))
    if early is not None and early.stopped_before:
        return (f"early stopping ended the run after epoch {initial_epoch} (no gain in "
                f"{early.monitor} since epoch {early.best_epoch + 1}); raise "
                "early_stopping.patience to go on.")
    return None


def _run(config, run, runtime, verbose, resume, started, *, model, data, callbacks,
         optimizer_hook, metadata, arch_name) -> FitResult:
    import keras

    from keras_resnet.training.checkpoints import run_metadata, save_run_model
    from keras_resnet.training.curves import plot_curves
    from keras_resnet.training.speedups import apply_training_speedups

    dist = runtime.distribution
    _say(f"Run directory: {run.real}", verbose)
    _say(f"Precision: {runtime.precision} ({'auto: ' if config['precision'] == 'auto' else ''}"
         f"{runtime.precision_reason})", verbose)
    if runtime.onednn is not None:
        _say(f"TensorFlow CPU kernels: {'oneDNN' if runtime.onednn else 'Eigen (oneDNN off)'}",
             verbose)
    _say(f"Strategy: {dist.description}, {dist.replicas} replica(s)", verbose)
    if config["tensorboard"] and not tensorboard_available():
        _say("TensorBoard logs: off, the tensorboard package is not installed "
             "(pip install tensorboard)", verbose)

    requested = config            # saved as config.yaml; a time budget may change the epochs
    decision = None
    if config["time_budget_minutes"] is not None:
        if dist.name == "multiworker":
            raise ValueError("time_budget_minutes: not with a multi-worker strategy (each "
                             "worker would measure its own speed)")
        decision = read_decision(run.real / BUDGET_FILE) if resume else None
        if decision is not None:
            config = dict(config, epochs=decision["epochs"])
            _say(f"Time budget: keeping the {decision['epochs']} epochs chosen when the run "
                 "started", verbose)

    initial_epoch = run.resume_epoch() if resume else 0
    done = _finished_before(run, config, initial_epoch) if resume else None
    if done is not None:
        import json

        _say(f"Nothing to do: {done}", verbose)
        return FitResult(run.real, json.loads(run.metrics.read_text()),
                         read_history(run.history), config, None, "already_complete")

    if data is None:
        data = load_training_data(config)
    _say(f"Data: {_describe_data(data)}", verbose)
    if data.train is None or not data.num_examples.get("train"):
        raise ValueError(f"{data.spec} has no training images")
    steps, repeat = steps_per_epoch_of(config, data)
    train_ds = _train_from_epoch(data, initial_epoch)
    val_ds = _with_known_length(data.val, data.num_examples.get("val"), config["batch_size"])
    if repeat:
        train_ds = train_ds.repeat()
    if dist.name == "multiworker":
        train_ds = _distribute_options(train_ds)
        val_ds = _distribute_options(val_ds) if val_ds is not None else None

    with dist.strategy.scope():
        if model is None:
            model = build_model(config, data)
            # Also on resume: a run killed before its first backup has nothing to restore.
            # (A model passed in, as fine-tuning does, keeps its own filters.)
            _init_data_dependent_layers(model, data, verbose, config["model"]["whitening_eps"])
        elif callable(model) and not isinstance(model, keras.Model):
            model = model(data)
        apply_training_speedups(model, config)
        compile_for_training(model, config, steps, optimizer_hook=optimizer_hook,
                             distributed=dist.name != "none")
        if dist.name == "multiworker":
            _fix_multiworker_build(model)
    if config["time_budget_minutes"] is not None and decision is None:
        decision = _choose_epochs_for_budget(model, config, train_ds, steps, data, started)
        config = dict(config, epochs=decision["epochs"])
        chosen = decision["epochs"]
        _say(f"Time budget: {chosen} epoch{'s' if chosen != 1 else ''} of about "
             f"{decision['epoch_seconds_estimate']:.0f} s fit in "
             f"{config['time_budget_minutes']:g} minutes (at most {requested['epochs']}; "
             f"{decision['step_seconds']:.3g} s per step measured)", verbose)
        with dist.strategy.scope():
            # A fresh optimizer (the timed steps moved the first one) and a schedule sized to
            # the chosen epochs.
            compile_for_training(model, config, steps, optimizer_hook=optimizer_hook,
                                 distributed=dist.name != "none")

    arch = arch_name or config["arch"]
    meta = run_metadata(class_names=data.class_names, arch=arch, image_shape=data.image_shape,
                        recipe=config, extra=metadata)
    optimizer = config["optimizer"]
    rates = f"lr {optimizer['lr']:g}" + (f" (filters {optimizer['muon_lr']:g})"
                                         if optimizer["name"] == "muon" else "")
    _say(f"Model: {arch}, {model.count_params():,} parameters; {optimizer['name']} {rates}, "
         f"{config['schedule']['name']} schedule, "
         f"{config['epochs']} epochs x {steps} steps of {config['batch_size']}", verbose)

    run.create()
    if dist.is_chief:
        save_config(requested, run.config)
        if decision is not None:
            write_decision(run.path / BUDGET_FILE, decision)
    if resume:
        _say(f"Resuming at epoch {initial_epoch + 1} of {config['epochs']}", verbose)

    parts = training_callbacks(run, config, metadata=meta, has_val=val_ds is not None,
                               initial_epoch=initial_epoch, extra=list(callbacks),
                               steps_per_epoch=steps)
    fit_epochs = config["epochs"]
    if decision is not None and not resume \
            and replan_due(REPLAN_AFTER_EPOCH, decision["epochs"], requested["epochs"]):
        # Up to the cap: BudgetReplan stops the run at its plan, which may grow.
        fit_epochs = requested["epochs"]
        parts.callbacks.extend(_budget_replan_callbacks(config, requested["epochs"], decision,
                                                        meta, steps, started, run, verbose))
    session_start = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=fit_epochs,
              steps_per_epoch=steps if repeat else None,
              validation_steps=config["validation_steps"], callbacks=parts.callbacks,
              verbose=verbose, initial_epoch=initial_epoch, shuffle=False)
    session_seconds = time.perf_counter() - session_start
    if decision is not None:
        config = dict(config, epochs=decision["epochs"])

    nan = parts.nan_guard.tripped
    if nan:
        stopped = "nan"
    elif parts.early_stopping is not None and parts.early_stopping.stopped_epoch > 0:
        stopped = "early_stopping"
    else:
        stopped = "completed"

    rows = read_history(run.history)
    if nan:
        rows = [r for r in rows if r["epoch"] < parts.nan_guard.epoch]
        if run.last.is_file():
            good = keras.models.load_model(run.last, compile=False)
            model.set_weights(good.get_weights())
    final = _final_metrics(rows)
    averaged = config["optimizer"]["ema"] or config["optimizer"]["lookahead_every"]
    if averaged and not nan and val_ds is not None:
        # Keras (EMA) or Lookahead swapped the averaged weights in at the end of fit; score
        # those.
        scores = model.evaluate(val_ds, steps=config["validation_steps"], verbose=0,
                                return_dict=True)
        final.update({f"val_{k}": float(v) for k, v in scores.items()})
        final["averaged_weights"] = "ema" if config["optimizer"]["ema"] else "lookahead"

    if not nan or run.last.is_file():
        save_run_model(model, run.model, dict(meta, epoch=len(rows)))
    timer = parts.timer
    images = timer.train_steps * config["batch_size"]
    metrics = {
        **final,
        "epochs": len(rows),
        "epochs_planned": config["epochs"],
        "best": parts.checkpoints.monitor_record(),
        "stopped": stopped,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "train_time_s": round(sum(r.get("epoch_time", 0.0) for r in rows), 2),
        "session_train_time_s": round(session_seconds, 2),
        "images_per_second": round(images / timer.train_seconds, 1) if timer.train_seconds
        else None,
        "precision": runtime.precision,
        "onednn": runtime.onednn,
        "strategy": dist.name,
        "replicas": dist.replicas,
        "batch_size": config["batch_size"],
        "steps_per_epoch": steps,
        "resumed_from_epoch": initial_epoch if resume else None,
    }
    if decision is not None:
        metrics["time_budget"] = decision
    if nan:
        metrics["nan_at"] = {"epoch": parts.nan_guard.epoch, "step": parts.nan_guard.step}
    write_json(run.metrics, metrics)
    if rows:
        plot_curves([run.history], run.curves, labels=[run.real.name], title=f"{arch} on "
                    f"{data.spec}")
    if nan:
        from keras_resnet.models import read_metadata

        kept = (f"kept the last good checkpoint (checkpoints/last.keras, epoch "
                f"{read_metadata(run.last).get('epoch')})" if run.last.is_file()
                else "no epoch had finished, so there is no checkpoint")
        _say(f"Stopped: the loss became NaN in epoch {parts.nan_guard.epoch + 1}; {kept}.",
             verbose)
    else:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in final.items() if isinstance(v, float))
        _say(f"Done in {metrics['wall_time_s']:.0f}s ({stopped}): {shown}; "
             f"{metrics['images_per_second']} images/s. Model: {run.real / 'model.keras'}",
             verbose)
    return FitResult(run.real, metrics, rows, config, model, stopped)
