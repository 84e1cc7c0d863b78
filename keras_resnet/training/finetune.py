"""Fine-tuning: adapt a pretrained ResNet to a new dataset, on top of ``fit``.

``finetune`` runs two ``fit`` runs into one run directory:

1. ``DIR/head/``: the new classifier trains with the whole backbone frozen (BatchNorm in
   inference mode) at ``head_lr``, so the random head does not send large gradients into
   the pretrained features;
2. ``DIR/finetune/``: the network unfreezes down to ``freeze`` and trains at the config's
   (lower) learning rate with a warm-up, optionally smaller for earlier stages
   (``stage_lr_decay``).

Each phase is a complete ``fit`` run (config, checkpoints, resume, metrics, curves); ``DIR``
itself holds what a run directory holds for the whole: ``config.yaml`` (the fit settings plus
a ``finetune`` section), ``history.csv`` (both phases, a ``phase`` column), ``best.keras``,
``model.keras``, ``metrics.json`` and ``curves.png``.

Resolving SOURCE and fitting it with a new head is ``keras_resnet.training.sources``; freezing
and per-depth learning rates by the zoo's layer names ``keras_resnet.training.freezing``.
"""
from __future__ import annotations

import copy
import os
import shutil
import time
from pathlib import Path

import keras

from keras_resnet.training import config as config_module
from keras_resnet.training.config import Field as F
from keras_resnet.training.freezing import (
    FREEZE_CHOICES, apply_lr_multipliers, depth_lr_multipliers, freeze as freeze_model,
)
from keras_resnet.training.sources import (
    Pretrained, prepare_model, replace_head, resolve_source, with_global_policy,
)

__all__ = ["InitFrom", "finetune", "prepare_model", "replace_head", "resolve_finetune_config",
           "resolve_settings"]

# The fine-tuning settings: the ``finetune`` section of a fine-tuning config.
SETTINGS = {
    "source": F(None, "str", "the pretrained network: a .keras file, a run directory, "
                "keras:NAME[=WEIGHTS]", nullable=True),
    "freeze": F("none", "str", "keep frozen in phase 2: everything up to and including this "
                "part", choices=FREEZE_CHOICES),
    "head_epochs": F(3, "int", "phase 1: epochs training only the new head (0 = skip)",
                     minimum=0),
    "head_lr": F(0.05, "float", "phase 1 learning rate", minimum=0, exclusive=True),
    "stage_lr_decay": F(1.0, "float", "phase 2: each earlier stage learns this much slower "
                        "(1 = same rate everywhere)", minimum=0, maximum=1, exclusive=True),
    "dropout": F(None, "float", "dropout of the new head (null: keep the source's)", minimum=0,
                 maximum=0.99, nullable=True),
}

# Fit settings that differ for fine-tuning, laid over fit's defaults and under the user's:
# a tenth of fit's learning rate, cosine decay after a warm-up of min(1, epochs / 5) epochs.
FIT_DEFAULTS = {"epochs": 10, "optimizer": {"lr": 0.02}, "schedule": {"name": "cosine"}}
WARMUP_EPOCHS, WARMUP_FRACTION = 1.0, 0.2
PHASES = ("head", "finetune")


class InitFrom:
    """``fit(model=InitFrom(SOURCE))`` (``keras-resnet fit --init-from SOURCE``): start a
    normal training run from SOURCE's weights, with a new head for the data's classes and
    nothing frozen."""

    def __init__(self, source):
        from keras_resnet.models import list_models

        self.pretrained = resolve_source(source)
        self.arch = self.pretrained.arch
        self.metadata = {"init_from": self.pretrained.description}
        # The run's config names the source's architecture (when it is a zoo entry).
        self.overrides = {"arch": self.arch} if self.arch in list_models() else {}

    def __call__(self, data) -> keras.Model:
        return prepare_model(self.pretrained, data.num_classes,
                             image_size=tuple(data.image_shape[:2]))[0]


# -- configuration ------------------------------------------------------------------------------

def resolve_settings(settings: dict) -> dict:
    """The ``finetune`` section validated, defaults filled in; a ``ConfigError`` lists every
    problem, one line each, like the rest of the config."""
    import difflib

    errors = []
    for key in settings:
        if key not in SETTINGS:
            close = difflib.get_close_matches(key, list(SETTINGS), n=1, cutoff=0.6)
            errors.append(f"finetune.{key}: unknown key"
                          + (f" (did you mean 'finetune.{close[0]}'?)" if close else ""))
    resolved = {}
    for key, spec in SETTINGS.items():
        value = settings.get(key, copy.deepcopy(spec.default))
        # The config's own per-field check (type, choices, bounds), so messages match fit's.
        resolved[key] = config_module._check_field(f"finetune.{key}", spec, value, errors)
    if errors:
        raise config_module.ConfigError(errors)
    return resolved


def _split(config, overrides) -> tuple[dict, dict, dict]:
    """(fit layer, fit overrides, fine-tuning settings) from a recipe (name, path, dict or
    ``None``) and overrides: the ``finetune`` section and ``finetune.*`` keys are ours."""
    nested = config_module.load_recipe(config)
    settings = nested.pop("finetune", None) or {}
    if not isinstance(settings, dict):
        raise config_module.ConfigError([f"finetune: expected a mapping of "
                                         f"{', '.join(SETTINGS)}, got {settings!r}"])
    fit_overrides = {}
    for key, value in config_module.parse_overrides(overrides).items():
        if key.startswith("finetune."):
            settings[key[len("finetune."):]] = value
        else:
            fit_overrides[key] = value
    return nested, fit_overrides, settings


def resolve_finetune_config(config=None, overrides=None, *, data_given: bool = False) -> dict:
    """The config a fine-tuning run uses: fit's (with ``FIT_DEFAULTS`` under the user's
    values, ``arch`` the source's) plus the validated ``finetune`` section."""
    from keras_resnet.models import list_models

    layer, fit_overrides, settings = _split(config, overrides)
    settings = resolve_settings(settings)
    if not settings["source"]:
        raise ValueError("fine-tuning needs a pretrained SOURCE: --from FILE.keras, a run "
                         "directory or keras:NAME")
    user_keys = set(config_module.flatten(layer)) | set(fit_overrides)
    if not data_given and "data.spec" not in user_keys:
        raise ValueError("fine-tuning needs the new data: --data SPEC (a folder of class "
                         "folders, an .npz, ...)")
    pretrained = resolve_source(settings["source"])
    fit_layer = config_module.deep_merge(FIT_DEFAULTS, layer)
    if pretrained.arch in list_models():
        fit_layer["arch"] = pretrained.arch
        fit_overrides.pop("arch", None)
        _check_freeze_depth(settings["freeze"], pretrained.arch)
    resolved = config_module.resolve_config(fit_layer, fit_overrides)
    if "schedule.warmup_epochs" not in user_keys:
        resolved["schedule"]["warmup_epochs"] = min(WARMUP_EPOCHS,
                                                    WARMUP_FRACTION * resolved["epochs"])
        resolved = config_module.validate(resolved)
    return {**resolved, "finetune": settings}


def _check_freeze_depth(freeze: str, arch: str) -> None:
    """Refuse ``stage4`` for a 3-stage network before any training starts."""
    from keras_resnet.models import get_spec

    stages = len(get_spec(arch)["layers"])
    if freeze.startswith("stage") and int(freeze[5:]) > stages:
        raise ValueError(f"finetune.freeze: {arch} has {stages} stages (stage1..stage{stages}); "
                         f"cannot freeze up to {freeze}")


def resume_finetune_config(saved: dict, config=None, overrides=None) -> dict:
    """The config of a resumed fine-tuning run: the saved one, where fit's resumable keys may
    change (``config.resume_config``) and the fine-tuning settings may not."""
    saved = copy.deepcopy(saved)
    saved_settings = resolve_settings(saved.pop("finetune", None) or {})
    layer, fit_overrides, settings = _split(config, overrides)
    asked = resolve_settings({**saved_settings, **settings})
    errors = [f"finetune.{key}: cannot change when resuming (the run has "
              f"{saved_settings[key]!r}, asked for {value!r}); start a new run instead"
              for key, value in asked.items() if value != saved_settings[key]]
    if errors:
        raise config_module.ConfigError(errors)
    fit_overrides.pop("arch", None)
    return {**config_module.resume_config(saved, layer, fit_overrides), "finetune": asked}


def phase_config(config: dict, phase: str) -> dict:
    """The ``fit`` config of one phase. Phase 2 is the config itself; phase 1 trains for
    ``head_epochs`` at ``head_lr``, cosine decay without warm-up (only the head learns), and
    leaves a time budget to phase 2."""
    fit_config = {key: copy.deepcopy(value) for key, value in config.items()
                  if key != "finetune"}
    if phase == "head":
        settings = config["finetune"]
        fit_config["time_budget_minutes"] = None
        fit_config["epochs"] = settings["head_epochs"]
        fit_config["optimizer"]["lr"] = settings["head_lr"]
        fit_config["schedule"].update(name="cosine", warmup_epochs=0.0, milestones=[])
    return config_module.validate(fit_config)


# -- the run ------------------------------------------------------------------------------------

def finetune(source=None, data=None, config=None, *, output=None, resume: bool = False,
             overrides=None, epochs: int | None = None, head_epochs: int | None = None,
             freeze: str | None = None, lr: float | None = None, head_lr: float | None = None,
             stage_lr_decay: float | None = None, callbacks=()):
    """Fine-tune a pretrained ResNet on new data and write a run directory.

    Args:
        source: the pretrained network: a ``.keras`` file or run directory of ours,
            ``"keras:resnet50"`` (ImageNet weights, downloaded by Keras),
            ``"keras:resnet50=path/to/weights.h5"``, ``"keras:resnet50=random"``, or a
            ``keras.Model`` (ours, or a ``keras.applications`` ResNet).
        data: a data spec (``load_data``) or an ``ImageData``.
        config: a recipe (name, YAML path or dict) for the fit settings, optionally with a
            ``finetune`` section (see ``SETTINGS``).
        output: the run directory (default ``runs/ARCH-finetune-TIMESTAMP``).
        resume: continue the run in ``output`` where it stopped (either phase).
        overrides: ``{"optimizer.weight_decay": 1e-4, "finetune.freeze": "stage1"}`` or
            ``["KEY=VALUE", ...]``.
        epochs, lr: phase 2 (fine-tuning) epochs and peak learning rate.
        head_epochs, head_lr: phase 1 (new head, frozen backbone); ``head_epochs=0`` skips it.
        freeze: ``none``, ``stem``, ``stage1`` ... ``stage4`` or ``backbone``: what stays
            frozen in phase 2 (everything up to and including that part).
        stage_lr_decay: in phase 2 the last stage learns at ``lr * stage_lr_decay``, the one
            before at ``lr * stage_lr_decay**2`` ... (1 = the same rate everywhere).
        callbacks: more Keras callbacks, for both phases.

    Returns the ``FitResult`` of the whole run (``run_dir``, ``metrics``, ``history``,
    ``model``, ``stopped``).
    """
    from keras_resnet.training.distribute import task_is_chief, tf_config
    from keras_resnet.training.rundir import RunDirectory, default_output

    flat = dict(config_module.parse_overrides(overrides))
    named = {"epochs": epochs, "optimizer.lr": lr, "finetune.head_epochs": head_epochs,
             "finetune.freeze": freeze, "finetune.head_lr": head_lr,
             "finetune.stage_lr_decay": stage_lr_decay}
    flat.update({key: value for key, value in named.items() if value is not None})
    pretrained = None
    if isinstance(source, (keras.Model, Pretrained)):
        pretrained = resolve_source(source)
        flat["finetune.source"] = pretrained.description
    elif source is not None:
        flat["finetune.source"] = str(source)
    image_data = None
    if isinstance(data, (str, os.PathLike)):
        flat["data.spec"] = str(data)
    elif data is not None:
        image_data = data

    started = time.perf_counter()
    if resume:
        if output is None:
            raise ValueError("--resume needs --output, the fine-tuning run directory to continue")
        run_dir = Path(output)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"cannot resume: no config.yaml in {run_dir}")
        full = resume_finetune_config(config_module.load_yaml(run_dir / "config.yaml"),
                                      config, flat)
    else:
        full = resolve_finetune_config(config, flat, data_given=image_data is not None)
        run_dir = Path(output) if output else default_output(f"{full['arch']}-finetune")
        RunDirectory(run_dir).check_new()
    settings = full["finetune"]
    pretrained = pretrained or resolve_source(settings["source"])
    chief = task_is_chief(tf_config())
    if chief:
        config_module.save_config(full, run_dir / "config.yaml")

    from keras_resnet.training.fit import resolve_verbose

    verbose = resolve_verbose(full) if chief else 0
    common = dict(data=image_data, callbacks=callbacks, arch_name=pretrained.arch)
    metadata = {"finetuned_from": pretrained.description, "finetune": settings}
    results = {}
    if settings["head_epochs"] > 0:
        _say(f"Phase 1 of 2: training a new head on the frozen backbone of "
             f"{pretrained.description}", verbose)

        def head_model(data):
            model, _ = prepare_model(pretrained, data.num_classes,
                                     image_size=tuple(data.image_shape[:2]),
                                     dropout=settings["dropout"])
            freeze_model(model, "backbone")
            return model

        results["head"] = _run_phase(run_dir / "head", phase_config(full, "head"), resume,
                                     model=head_model, metadata={**metadata, "phase": "head"},
                                     **common)
        if not results["head"].ok:
            return _summarise(run_dir, full, results, started, chief)

    trained_head = run_dir / "head" / "model.keras" if "head" in results else None
    _say(f"Phase {len(results) + 1} of {len(results) + 1}: fine-tuning"
         + (f" with {_frozen_words(settings['freeze'])}" if settings["freeze"] != "none" else
            " the whole network"), verbose)

    def finetune_model(data):
        image_size = tuple(data.image_shape[:2])
        if trained_head is not None:
            model = with_global_policy(resolve_source(trained_head).build(image_size))
        else:
            model, _ = prepare_model(pretrained, data.num_classes, image_size=image_size,
                                     dropout=settings["dropout"])
        freeze_model(model, settings["freeze"])
        return model

    decay = settings["stage_lr_decay"]

    def per_stage_rates(optimizer, model):
        apply_lr_multipliers(optimizer, model.trainable_variables,
                             depth_lr_multipliers(model, decay))

    results["finetune"] = _run_phase(
        run_dir / "finetune", phase_config(full, "finetune"), resume, model=finetune_model,
        metadata={**metadata, "phase": "finetune"},
        optimizer_hook=per_stage_rates if decay < 1.0 else None, **common)
    return _summarise(run_dir, full, results, started, chief)


def _say(message: str, verbose: int) -> None:
    if verbose:
        print(message, flush=True)


def _frozen_words(freeze: str) -> str:
    if freeze in ("backbone", "stem"):
        return f"the {freeze} frozen"
    return f"the stem and stages 1-{freeze[5:]} frozen" if freeze != "stage1" else \
        "the stem and stage 1 frozen"


def _run_phase(phase_dir: Path, config: dict, resume: bool, **kwargs):
    """One phase as a ``fit`` run; resumed if it had started (it has a ``config.yaml``)."""
    from keras_resnet.training.fit import fit

    resume_phase = resume and (phase_dir / "config.yaml").is_file()
    if not resume_phase and phase_dir.is_dir() and not any(
            p.is_file() for p in phase_dir.rglob("*")):
        shutil.rmtree(phase_dir)  # a kill right at the start left only empty folders
    return fit(config, output=phase_dir, resume=resume_phase, **kwargs)


def _monitor_mode(config: dict, monitor: str) -> str:
    mode = config["checkpoint"]["mode"]
    if mode == "auto":
        mode = "max" if ("acc" in monitor or "auc" in monitor) else "min"
    return mode


def _best_phase(run_dir: Path, config: dict, results: dict):
    """The phase whose ``best.keras`` is best by the checkpoint monitor (the later phase on a
    tie), with its record."""
    chosen, record = None, None
    for phase in PHASES:
        best = (results.get(phase).metrics.get("best") or {}) if phase in results else {}
        value = best.get("value")
        if value is None or not (run_dir / phase / "best.keras").is_file():
            continue
        if record is not None:
            better = value >= record["value"] if _monitor_mode(
                config, best["monitor"]) == "max" else value <= record["value"]
            if not better:
                continue
        chosen, record = phase, best
    return chosen, record


def _place(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` atomically: a hard link (no second copy on disk), or a
    copy where links are not possible."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)


def _summarise(run_dir: Path, config: dict, results: dict, started: float, chief: bool):
    """The run directory's own files for the whole run, from the phases' files."""
    from keras_resnet.training.curves import plot_curves
    from keras_resnet.training.fit import FitResult
    from keras_resnet.training.rundir import read_history, write_history, write_json

    rows, offsets = [], {}
    for number, phase in enumerate(PHASES, start=1):
        if phase not in results:
            continue
        offsets[phase] = len(rows)
        for row in read_history(run_dir / phase / "history.csv"):
            rows.append({"epoch": offsets[phase] + row["epoch"], "phase": number,
                         **{k: v for k, v in row.items() if k != "epoch"}})
    last = list(results)[-1]
    final = results[last]
    best_phase, best = _best_phase(run_dir, config, results)
    settings = config["finetune"]
    metrics = {
        **{k: v for k, v in final.metrics.items() if k not in ("best", "resumed_from_epoch")},
        "epochs": len(rows),
        "epochs_planned": sum(r.metrics.get("epochs_planned", 0) for r in results.values()),
        "stopped": final.stopped,
        "source": settings["source"],
        "freeze": settings["freeze"],
        "best": dict(best, phase=best_phase, epoch=offsets[best_phase] + best["epoch"])
        if best_phase else None,
        "wall_time_s": round(sum(r.metrics.get("wall_time_s", 0.0) for r in results.values()), 2),
        "session_wall_time_s": round(time.perf_counter() - started, 2),
        "train_time_s": round(sum(r.get("epoch_time", 0.0) for r in rows), 2),
        "phases": {phase: result.metrics for phase, result in results.items()},
    }
    if chief:
        write_history(run_dir / "history.csv", rows)
        if (run_dir / last / "model.keras").is_file():
            _place(run_dir / last / "model.keras", run_dir / "model.keras")
        if best_phase:
            _place(run_dir / best_phase / "best.keras", run_dir / "best.keras")
        write_json(run_dir / "metrics.json", metrics)
        if rows:
            plot_curves([run_dir / "history.csv"], run_dir / "curves.png", labels=[run_dir.name],
                        title=f"{config['arch']} fine-tuned on {config['data']['spec']}")
    return FitResult(run_dir, metrics, rows, config, final.model, final.stopped)
