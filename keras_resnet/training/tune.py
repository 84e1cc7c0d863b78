"""``tune``: hyperparameter search over a training recipe with keras-tuner.

A trial is the resolved recipe with the trial's values laid over it, trained by the same steps
``fit`` uses (``load_training_data``, ``build_model``, ``compile_for_training``, ``model.fit``)
and scored on the objective (validation accuracy by default): the best epoch's value, as
keras-tuner scores a ``History``, or with ``folds=K`` the mean (and standard deviation) of that
score over a stratified K-fold split of the training examples.

The search itself is keras-tuner's (random, grid, bayesian or hyperband), with its project
folder under ``OUTPUT/tuner``: running the same search again reloads it, skips the finished
trials and reruns one that was interrupted. ``OUTPUT/search.json`` records what the search is
(recipe, space, strategy, folds), so a changed command cannot quietly continue someone else's
search. After every trial ``OUTPUT/trials.csv``, ``OUTPUT/trials.png`` and ``OUTPUT/best.yaml``
(a complete recipe for ``keras-resnet fit --config``) are rewritten, so an interrupted search
still leaves its best result behind.
"""
from __future__ import annotations

import copy
import csv
import difflib
import io
import json
import logging
import math
import os
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import keras_tuner as kt

from keras_resnet.training import config as config_module
from keras_resnet.training.config import (
    ConfigError, dump_yaml, flatten, iter_fields, resolve_config, set_dotted, validate,
    write_text_atomic)
from keras_resnet.training.search_space import SearchSpace, load_space, parse_objective, \
    parse_space

DEFAULT_TRIALS = 10
# Keys a search may not vary: they pick the data or the machinery, not the recipe's quality.
NOT_TUNABLE = ("data.spec", "strategy", "precision", "deterministic", "verbose", "tensorboard",
               "checkpoint.save_freq", "checkpoint.monitor", "checkpoint.mode")
# Recipe keys that may differ when a search is continued: they change speed or output, not
# the scores the finished trials were given. Not ``float32_activations``: in three CIFAR-10
# runs (BENCHMARKS.md) it cost 0.4-0.5 points, as much as a change of seed.
MAY_CHANGE_ON_RESUME = ("verbose", "tensorboard", "strategy", "precision", "steps_per_execution",
                        "jit_compile", "fused_batchnorm", "matmul_small_convs",
                        "matmul_filter_gradients", "data.cache", "deterministic")
DATA_CACHE_SIZE = 2
PROJECT = "tuner"


@dataclass
class TuneResult:
    """What a search found. ``trials`` are the rows of ``trials.csv``."""

    output: Path
    objective: str
    direction: str
    best_score: float | None
    best_std: float | None
    best_values: dict
    best_recipe: dict | None
    trials: list = field(default_factory=list)

    @property
    def best_yaml(self) -> Path:
        return self.output / "best.yaml"


# -- the space against the recipe ----------------------------------------------------------------

def check_space(space: SearchSpace, recipe: dict, search: str) -> None:
    """Every hyperparameter must be a recipe key that may be tuned, and every value it can take
    must pass the recipe's validation; the first problem is one line naming the space file."""
    leaves = [key for key, _ in iter_fields()]
    sections = sorted({key.rsplit(".", 1)[0] for key in leaves if "." in key})
    for h in space.hyperparameters:
        where = f"{space.source}: hyperparameter {h.name!r}"
        if h.name in sections:
            keys = ", ".join(k for k in leaves if k.startswith(h.name + "."))
            raise ValueError(f"{where} is a section; name one of its keys ({keys})")
        if h.name not in leaves:
            close = difflib.get_close_matches(h.name, leaves, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: unknown hyperparameter, not a recipe key{hint}")
        if h.name in NOT_TUNABLE or (search == "hyperband" and h.name == "epochs"):
            why = ("hyperband sets the epochs of each trial itself" if h.name == "epochs"
                   else "it selects the data or the machinery, not the recipe")
            raise ValueError(f"{where} cannot be tuned: {why}")
        for value in h.examples():
            trial = copy.deepcopy(recipe)
            set_dotted(trial, h.name, value)
            try:
                validate(trial)
            except ConfigError as error:
                raise ValueError(f"{where}: {value!r} is not a valid recipe value "
                                 f"({error.errors[0]})") from None
    if search == "grid":
        space.require_grid()


def trial_recipe(recipe: dict, values: dict) -> dict:
    """The recipe with a trial's values laid over it, validated (types normalised)."""
    trial = copy.deepcopy(recipe)
    for name, value in values.items():
        set_dotted(trial, name, value)
    return validate(trial)


# -- one trial -----------------------------------------------------------------------------------

class RecipeHyperModel(kt.HyperModel):
    """Builds and trains the recipe of a trial with the training steps of ``fit``."""

    def __init__(self, recipe, space, runtime, *, folds=None, verbose=0):
        super().__init__(name="recipe")
        self.recipe = recipe
        self.space = space
        self.objective = space.objective
        self.runtime = runtime
        self.folds = folds
        self.verbose = verbose
        self._data = OrderedDict()

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def config_for(self, hp) -> dict:
        return trial_recipe(self.recipe, {name: hp.get(name) for name in self.space.names})

    def data_for(self, config):
        """The trial's ``ImageData``; the last few are kept, so trials that share the data
        options (spec, batch size, augmentation, seed) share the loaded data."""
        from keras_resnet.training.fit import load_training_data

        key = json.dumps([config["data"], config["batch_size"], config["seed"]],
                         sort_keys=True)
        if key not in self._data:
            self._data[key] = load_training_data(config)
            while len(self._data) > DATA_CACHE_SIZE:
                self._data.popitem(last=False)
        self._data.move_to_end(key)
        return self._data[key]

    def compiled_model(self, config, data):
        import keras

        from keras_resnet.training.fit import (
            build_model, compile_for_training, steps_per_epoch_of)
        from keras_resnet.training.speedups import apply_training_speedups

        if config.get("seed") is not None:
            # Every trial starts from the same seed, so trials differ by their values only.
            keras.utils.set_random_seed(int(config["seed"]))
        with self.runtime.strategy.scope():
            model = build_model(config, data)
            apply_training_speedups(model, config)
            compile_for_training(model, config, steps_per_epoch_of(config, data)[0])
        return model

    def build(self, hp):
        config = self.config_for(hp)
        return self.compiled_model(config, self.data_for(config))

    def fit(self, hp, model, *args, callbacks=(), epochs=None, initial_epoch=0, **kwargs):
        """Train (on every fold with ``folds``) and return the trial's metrics: the
        objective (mean over folds), its standard deviation, per-fold scores and time."""
        from keras_resnet.training.crossval import stratified_folds, summarise

        started = time.perf_counter()
        config = self.config_for(hp)
        data = self.data_for(config)
        epochs = epochs or config["epochs"]
        if self.folds:
            splits = stratified_folds(data.labels("train"), self.folds,
                                      seed=config["seed"] or 0)
            runs = [data.fold(train, val) for train, val in splits]
        else:
            if data.val is None:
                raise kt.errors.FatalValueError(
                    f"{data.spec} has no validation images to score trials on: set "
                    "data.val_split above 0 or use --folds")
            runs = [data]
        scores = []
        for index, run_data in enumerate(runs):
            # keras-tuner's callbacks (its best-epoch checkpoint, which hyperband resumes
            # from) follow the model it built; the other folds train models of their own.
            run_model = model if index == 0 else self.compiled_model(config, run_data)
            scores.append(self.train_and_score(
                run_model, config, run_data, epochs, initial_epoch,
                list(callbacks) if index == 0 else []))
        metrics = {self.objective.name: scores[0]}
        if self.folds:
            mean, std = summarise(scores)
            metrics = {self.objective.name: mean, f"{self.objective.name}_std": std}
            metrics.update({f"fold_{i + 1}": s for i, s in enumerate(scores)})
        metrics["seconds"] = time.perf_counter() - started
        return metrics

    def train_and_score(self, model, config, data, epochs, initial_epoch, callbacks):
        import keras

        from keras_resnet.training.callbacks import NanGuard
        from keras_resnet.training.fit import steps_per_epoch_of

        steps, repeat = steps_per_epoch_of(config, data)
        nan_guard = NanGuard()
        extra = [nan_guard]
        stopping = config["early_stopping"]
        if stopping["patience"]:
            extra.append(keras.callbacks.EarlyStopping(
                monitor=stopping["monitor"], patience=stopping["patience"],
                min_delta=stopping["min_delta"]))
        history = model.fit(
            data.train.repeat() if repeat else data.train, validation_data=data.val,
            epochs=epochs, initial_epoch=initial_epoch,
            steps_per_epoch=steps if repeat else None,
            validation_steps=config["validation_steps"], callbacks=extra + callbacks,
            shuffle=False, verbose=self.verbose)   # the data layer shuffles
        logged = history.history
        if config["optimizer"]["ema"] and not nan_guard.tripped:
            # Keras swapped the averaged weights in at the end of fit: score those.
            final = model.evaluate(data.val, steps=config["validation_steps"], verbose=0,
                                   return_dict=True)
            logged = {f"val_{k}": [float(v)] for k, v in final.items()}
        return score_history(logged, self.objective,
                             nan_guard.epoch - initial_epoch if nan_guard.tripped else None)


def score_history(logged: dict, objective, nan_epoch: int | None = None) -> float:
    """A trial's score: the best value of the objective over the epochs of ``logged``
    (``History.history``), leaving out the epoch where the loss became NaN (index
    ``nan_epoch``) and those after it."""
    name = objective.name
    if name not in logged:
        available = ", ".join(sorted(k for k in logged if k.startswith("val_")))
        raise kt.errors.FatalValueError(
            f"the objective {name!r} is not a metric of training (available: "
            f"{available or 'none'})")
    values = list(logged[name])[:nan_epoch]
    values = [float(v) for v in values if math.isfinite(float(v))]
    if not values:
        raise kt.errors.FailedTrialError(
            "the loss became NaN in the first epoch" if nan_epoch is not None
            else f"{name} was never finite")
    return objective.best_of(values)


class _RecipeTunerMixin:
    """A keras-tuner tuner with the space declared from the YAML file instead of by building a
    model (keras-tuner's default builds one just to discover the hyperparameters), tensorboard
    left optional, and a hook after every trial."""

    after_trial = None

    def _populate_initial_space(self):
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        # keras-tuner imports tensorboard for every trial on TensorFlow, even with no
        # TensorBoard callback to configure; tensorboard is optional here.
        if any(type(c).__name__ == "TensorBoard" for c in callbacks):
            super()._configure_tensorboard_dir(callbacks, trial, execution)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self.after_trial is not None:
            self.after_trial()


TUNERS = {name: type(f"Recipe{base.__name__}", (_RecipeTunerMixin, base), {})
          for name, base in (("random", kt.RandomSearch), ("grid", kt.GridSearch),
                             ("bayesian", kt.BayesianOptimization),
                             ("hyperband", kt.Hyperband))}


# -- the search record ---------------------------------------------------------------------------

def _signature(recipe, space, search, folds) -> dict:
    """What makes two searches the same one, in the form ``search.json`` stores it."""
    flat = {k: v for k, v in flatten(recipe).items() if k not in MAY_CHANGE_ON_RESUME}
    signature = {"recipe": flat, "space": space.to_dict(), "search": search, "folds": folds}
    return json.loads(json.dumps(signature, default=str))


def _check_same_search(output: Path, signature: dict) -> None:
    record = output / "search.json"
    if not record.is_file():
        if (output / PROJECT).exists():
            raise ValueError(f"{output} holds a search without its search.json, so it "
                             "cannot be checked before continuing: choose another --output")
        return
    saved = json.loads(record.read_text(encoding="utf-8"))
    differences = []
    for part in ("search", "folds", "space"):
        if saved.get(part) != signature[part]:
            differences.append(part)
    old, new = saved.get("recipe", {}), signature["recipe"]
    differences += [f"recipe key {k}" for k in sorted(set(old) | set(new))
                    if old.get(k) != new.get(k)]
    if differences:
        raise ValueError(f"{output} holds another search (it differs in "
                         f"{', '.join(differences[:3])}); run the same command to continue "
                         "it, or choose another --output")


def default_output(recipe: dict, space: SearchSpace) -> Path:
    """``runs/tune-ARCH-SPACE``: the same for the same command, so running it again
    continues the search."""
    stem = Path(space.source).stem if space.source != "<space>" else "space"
    return Path("runs") / f"tune-{recipe['arch']}-{stem}"


# -- reports -------------------------------------------------------------------------------------

def _ordered_trials(oracle) -> list:
    order = list(oracle.start_order) + [t for t in oracle.trials if t not in oracle.start_order]
    return [oracle.trials[trial_id] for trial_id in order if trial_id in oracle.trials]


def _metric(trial, name):
    if trial.metrics.exists(name):
        value = trial.metrics.get_last_value(name)
        return None if value is None else float(value)
    return None


def trial_rows(oracle, space: SearchSpace, folds) -> list[dict]:
    """One dict per trial, in the order they started: ``trial``, ``status``, every
    hyperparameter, ``score`` (``score_std`` and ``fold_N`` with folds), ``seconds``."""
    rows = []
    objective = space.objective.name
    for number, trial in enumerate(_ordered_trials(oracle), start=1):
        values = trial.hyperparameters.values
        row = {"trial": number, "trial_id": trial.trial_id, "status": trial.status.lower()}
        row.update({name: values.get(name) for name in space.names})
        if "tuner/epochs" in values:
            row["epochs_trained"] = values["tuner/epochs"]
        score = trial.score if trial.score is not None else _metric(trial, objective)
        row["score"] = None if score is None else float(score)
        if folds:
            row["score_std"] = _metric(trial, f"{objective}_std")
            for index in range(folds):
                row[f"fold_{index + 1}"] = _metric(trial, f"fold_{index + 1}")
        seconds = _metric(trial, "seconds")
        row["seconds"] = None if seconds is None else round(seconds, 2)
        rows.append(row)
    return rows


def _csv_text(rows: list[dict]) -> str:
    columns = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or ["trial", "status", "score"],
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def plot_trials(rows: list[dict], path, objective, title: str = "") -> Path:
    """Score against trial number (with the fold standard deviation as error bars) and the
    best score so far, atomically into ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scored = [r for r in rows if r.get("score") is not None]
    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    if scored:
        x = [r["trial"] for r in scored]
        y = [r["score"] for r in scored]
        errors = [r.get("score_std") or 0.0 for r in scored]
        if any(errors):
            axis.errorbar(x, y, yerr=errors, fmt="o", capsize=3, label="trial (mean ± std)")
        else:
            axis.plot(x, y, "o", label="trial")
        best, running = None, []
        for value in y:
            best = value if best is None or objective.better(value, best) else best
            running.append(best)
        axis.step(x, running, where="post", label="best so far")
        axis.legend(loc="best")
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("trial")
    axis.set_ylabel(objective.name)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=100)
        os.chmod(tmp, config_module.default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def best_row(rows: list[dict], objective) -> dict | None:
    """The completed trial with the best score; a tie goes to the trial that started first,
    so the choice does not depend on the order keras-tuner reloads its trial files in."""
    best = None
    for row in rows:
        if row["status"] != "completed" or row.get("score") is None \
                or not math.isfinite(row["score"]):
            continue
        if best is None or objective.better(row["score"], best["score"]):
            best = row
    return best


def write_reports(output: Path, oracle, recipe: dict, space: SearchSpace, search: str,
                  folds) -> tuple[list[dict], object]:
    """Rewrite ``trials.csv``, ``trials.png`` and ``best.yaml`` from the oracle's trials."""
    rows = trial_rows(oracle, space, folds)
    write_text_atomic(output / "trials.csv", _csv_text(rows))
    fold_note = f", {folds}-fold cross-validation" if folds else ""
    plot_trials(rows, output / "trials.png", space.objective,
                title=f"{search} search of {Path(space.source).name}{fold_note}")
    best = best_row(rows, space.objective)
    if best is not None:
        values = {name: best[name] for name in space.names}
        std = f" ± {best['score_std']:.4f}" if best.get("score_std") is not None else ""
        header = (f"# Best of {len(rows)} trials of a {search} search ({space.source}"
                  f"{fold_note}):\n# trial {best['trial']}, {space.objective.name} "
                  f"{best['score']:.4f}{std}\n"
                  f"# {', '.join(f'{k}={v}' for k, v in values.items())}\n"
                  f"# Train it with: keras-resnet fit --config {output / 'best.yaml'}\n")
        write_text_atomic(output / "best.yaml",
                          header + dump_yaml(trial_recipe(recipe, values)))
    return rows, best


# -- the search ----------------------------------------------------------------------------------

class TrialsFailed(RuntimeError):
    """keras-tuner gave up after several trials in a row failed."""


class _QuietRetracing(logging.Filter):
    """Every trial builds a new model, so TensorFlow's "triggered tf.function retracing"
    warning is expected during a search and says nothing useful."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _last_failure(oracle) -> str:
    for trial in reversed(_ordered_trials(oracle)):
        if trial.message:
            lines = [line for line in str(trial.message).strip().splitlines() if line.strip()]
            return lines[-1].strip() if lines else ""
    return ""


def _resolve_space(space, objective) -> SearchSpace:
    if space is None:
        raise ValueError("tune needs a search space (--space SPACE.yaml)")
    if isinstance(space, SearchSpace):
        parsed = space
    elif isinstance(space, dict):
        parsed = parse_space(space)
    else:
        parsed = load_space(space)
    if objective is not None:
        parsed = SearchSpace(parsed.hyperparameters, parse_objective(objective, "--objective"),
                             parsed.source)
    return parsed


def tune(config=None, space=None, *, search: str = "random", trials: int | None = None,
         folds: int | None = None, output=None, objective=None, overrides=None,
         verbose=None) -> TuneResult:
    """Search hyperparameters of a training recipe.

    Args:
        config: the recipe, as for ``fit``: a name in ``configs/``, a YAML path, a dict or
            ``None`` for the default recipe.
        space: a search-space YAML path, a dict of the same shape, or a ``SearchSpace``.
        search: ``random``, ``grid``, ``bayesian`` or ``hyperband`` (keras-tuner's tuners).
        trials: the most trials to run in all, counting those of an earlier run of the same
            search (default: 10; the whole grid for ``grid``; hyperband's own budget, from
            the recipe's ``epochs``, for ``hyperband``).
        folds: score every trial by stratified K-fold cross-validation over the training
            examples (mean and standard deviation) instead of on the validation split.
        output: the search directory (default ``runs/tune-ARCH-SPACE``). Running the same
            search into it again continues it.
        objective: a metric to optimise instead of the space's (``val_loss``,
            ``val_top5_accuracy:max``).
        overrides: ``{"epochs": 2}`` or ``["epochs=2"]``, laid over the recipe as for ``fit``.
        verbose: Keras verbosity of each trial (default: the recipe's ``verbose``).

    Returns a ``TuneResult``; the files are ``trials.csv``, ``trials.png``, ``best.yaml`` and
    ``search.json`` in ``output``, with keras-tuner's project in ``output/tuner``.
    """
    if search not in TUNERS:
        raise ValueError(f"unknown search {search!r}: use {', '.join(TUNERS)}")
    if trials is not None and (isinstance(trials, bool) or int(trials) < 1):
        raise ValueError(f"trials must be at least 1, got {trials}")
    if folds is not None:
        if isinstance(folds, bool) or int(folds) < 2:
            raise ValueError(f"folds must be at least 2, got {folds}")
        folds = int(folds)
        if search == "hyperband":
            raise ValueError("--folds does not combine with hyperband, which continues models "
                             "from earlier trials: use random, grid or bayesian")
    parsed = _resolve_space(space, objective)
    recipe = resolve_config(config, overrides)
    check_space(parsed, recipe, search)
    output = Path(output) if output is not None else default_output(recipe, parsed)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output} is a file")
    signature = _signature(recipe, parsed, search, folds)
    _check_same_search(output, signature)
    output.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output / "search.json", json.dumps(signature, indent=1, default=str))

    import keras

    from keras_resnet.training.fit import resolve_verbose, setup_runtime

    previous_policy = keras.config.dtype_policy()
    runtime = setup_runtime(recipe)
    if verbose is None:
        verbose = resolve_verbose(recipe)
    hypermodel = RecipeHyperModel(recipe, parsed, runtime, folds=folds,
                                          verbose=verbose)
    common = dict(hypermodel=hypermodel, seed=recipe["seed"],
                  objective=kt.Objective(parsed.objective.name, parsed.objective.direction),
                  directory=str(output), project_name=PROJECT, overwrite=False)
    if search == "hyperband":
        tuner = TUNERS[search](max_epochs=recipe["epochs"], **common)
        if trials is not None:
            tuner.oracle.max_trials = int(trials)
    else:
        limit = trials or (None if search == "grid" else DEFAULT_TRIALS)
        tuner = TUNERS[search](max_trials=limit, **common)
        # A trial cap given now applies to a reloaded search as well.
        tuner.oracle.max_trials = limit

    if verbose:
        finished = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
        budget = tuner.oracle.max_trials
        print(f"Tuning {recipe['arch']} on {recipe['data']['spec']}: {search} search over "
              f"{', '.join(parsed.names)}; {parsed.objective}"
              f"{f', {folds}-fold cross-validation' if folds else ''}; "
              f"{f'up to {budget} trials' if budget else 'until the search ends'}, "
              f"{_count(recipe['epochs'], 'epoch')} each; precision {runtime.precision}",
              flush=True)
        if finished:
            print(f"Continuing the search in {output}: {_count(finished, 'trial')} already "
                  "finished", flush=True)
        else:
            print(f"Search directory: {output}", flush=True)

    def report():
        return write_reports(output, tuner.oracle, recipe, parsed, search, folds)

    tuner.after_trial = report
    quiet = _QuietRetracing()
    logging.getLogger("tensorflow").addFilter(quiet)
    try:
        tuner.search(verbose=1 if verbose else 0)
    except RuntimeError as error:
        if "consecutive failures" not in str(error):
            raise
        report()
        raise TrialsFailed(f"the search stopped: {tuner.oracle.max_consecutive_failed_trials} "
                           f"trials in a row failed; the last: {_last_failure(tuner.oracle)} "
                           f"(trials.csv in {output})") from None
    finally:
        logging.getLogger("tensorflow").removeFilter(quiet)
        # The precision is the search's, not the caller's: models built later are unaffected.
        keras.config.set_dtype_policy(previous_policy)
    rows, best = report()
    best_values = {} if best is None else {name: best[name] for name in parsed.names}
    return TuneResult(
        output=output, objective=parsed.objective.name, direction=parsed.objective.direction,
        best_score=None if best is None else best["score"],
        best_std=None if best is None else best.get("score_std"),
        best_values=best_values,
        best_recipe=None if best is None else trial_recipe(recipe, best_values), trials=rows)
