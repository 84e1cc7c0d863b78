"""Training configuration: a schema as data, recipes as YAML, overrides as ``KEY=VALUE``.

A config is a nested dict. ``SCHEMA`` gives every key its default, its kind and the values it
may take; the defaults are the quick-start recipe (``configs/default.yaml`` lists the same
values, and a test keeps the two equal). Layers, lowest first:

1. ``SCHEMA`` defaults;
2. a recipe file (``configs/NAME.yaml`` or any path), or a dict;
3. overrides (``{"optimizer.lr": 0.05}`` or ``["optimizer.lr=0.05"]``, dotted keys for nested
   values; the command-line flags arrive here too).

``resolve_config`` validates the result: unknown keys, wrong types and impossible values give one
line each, collected into a single ``ConfigError`` (a ``ValueError``).
"""
from __future__ import annotations

import copy
import difflib
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_RECIPE = "default"


@dataclass(frozen=True)
class Field:
    """One config value: its default, kind and allowed values.

    ``kind`` is one of ``str``, ``int``, ``float``, ``bool``, ``floats`` (a list of numbers),
    ``size`` (an int or ``[height, width]``), ``int_or_auto`` and ``steps_or_epoch``.
    ``minimum``/``maximum`` bound numbers; ``exclusive`` makes ``minimum`` a strict bound.
    """

    default: Any
    kind: str
    help: str = ""
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive: bool = False
    nullable: bool = False
    extra: dict = field(default_factory=dict)


F = Field

SCHEMA: dict = {
    "arch": F("resnet20", "str", "zoo entry (keras-resnet zoo list)"),
    "model": {
        "width_multiplier": F(1.0, "float", "scales every stage's width", minimum=0,
                              exclusive=True),
        "dropout": F(0.0, "float", "dropout before the classifier", minimum=0, maximum=0.99),
        "drop_path_rate": F(0.0, "float", "stochastic depth of the last block", minimum=0,
                            maximum=0.99),
        "zero_init_residual": F(False, "bool", "start every residual branch at zero"),
        "bn_scale": F(True, "bool", "learn BatchNorm scales (false: fixed at 1, as airbench)"),
        "identity_init": F(False, "bool", "start the convs outside residual branches (in "
                           "airbench96 all convs) as identities (airbench's dirac init)"),
        "bn_momentum": F(0.9, "float", "BatchNorm moving-statistics momentum (Keras's "
                         "convention; airbench, at batch 1024: 0.6)", minimum=0, maximum=0.999),
        "activation": F("relu", "str", "the network's nonlinearity (airbench: gelu)",
                        choices=("relu", "gelu", "silu")),
        "pooling": F("avg", "str", "global pooling before the classifier (Page's ResNet-9: max)",
                     choices=("avg", "max")),
        "head_scale": F(1.0, "float", "multiply the pooled features by this before the "
                        "classifier (Page's ResNet-9: 0.125)", minimum=0, exclusive=True),
        "shortcut": F(None, "str", "override the zoo entry's shortcut",
                      choices=("projection", "avgpool", "zeropad"), nullable=True),
        "stem": F(None, "str", "override the zoo entry's stem (whitening: frozen 2x2 "
                  "patch-whitening filters fitted to the training images)",
                  choices=("imagenet", "deep", "cifar", "whitening"), nullable=True),
        "stem_bn": F(True, "bool", "whitening stem: a BatchNorm before its activation "
                     "(false: none, as airbench)"),
        "whitening_eps": F(5e-4, "float", "whitening stem: added to each eigenvalue before "
                           "scaling by 1/sqrt; larger damps the faintest patch directions",
                           minimum=0, exclusive=True),
    },
    "data": {
        "spec": F("shapes", "str", "dataset (see keras-resnet data --help)"),
        "image_size": F(None, "size", "resize to SIZE or [H, W]; null keeps the data's size",
                        nullable=True),
        "val_split": F(0.1, "float", "fraction held out when the data has no val split",
                       minimum=0, maximum=0.9),
        "split_seed": F(0, "int", "seed of that stratified hold-out; apart from `seed`, so "
                        "runs with other seeds are scored on the same images", minimum=0),
        "augment": F("cifar", "str",
                     "none, cifar or imagenet, optionally +reflect +randaugment +erasing "
                     "+cutout",
                     nullable=True),
        "crop_padding": F(None, "int", "pixels the crop (or reflect) shifts images by; null: "
                          "1/8 of the side (airbench: 2)", minimum=1, nullable=True),
        "mixup": F(0.0, "float", "mixup alpha (0 = off)", minimum=0),
        "cutmix": F(0.0, "float", "cutmix alpha (0 = off)", minimum=0),
        "cache": F(True, "bool", "cache decoded images in memory"),
    },
    "epochs": F(10, "int", "training epochs (with time_budget_minutes: the most)", minimum=1),
    "time_budget_minutes": F(None, "float", "train as many epochs as fit in this many minutes "
                             "(measured on this machine before training; at most epochs)",
                             minimum=0, exclusive=True, nullable=True),
    "batch_size": F(64, "int", "global batch size (all replicas together)", minimum=1),
    "steps_per_epoch": F(None, "int", "cap on training steps per epoch", minimum=1,
                         nullable=True),
    "validation_steps": F(None, "int", "cap on validation steps", minimum=1, nullable=True),
    "label_smoothing": F(0.0, "float", "label smoothing of the cross-entropy", minimum=0,
                         maximum=0.99),
    "optimizer": {
        "name": F("sgd", "str", "optimizer (muon: Muon for the convolution filters, SGD for "
                  "the rest)", choices=("sgd", "adamw", "muon")),
        "lr": F(0.1, "float", "peak learning rate", minimum=0, exclusive=True),
        "momentum": F(0.9, "float", "SGD momentum", minimum=0, maximum=0.999),
        "nesterov": F(True, "bool", "Nesterov momentum (SGD, Muon)"),
        "muon_lr": F(0.24, "float", "muon: the convolution filters' peak rate (same schedule)",
                     minimum=0, exclusive=True),
        "muon_momentum": F(0.6, "float", "muon: the filters' momentum", minimum=0,
                           maximum=0.999),
        "muon_ns_steps": F(5, "int", "muon: Newton-Schulz iterations per step", minimum=1),
        "beta_1": F(0.9, "float", "AdamW beta_1", minimum=0, maximum=0.9999),
        "beta_2": F(0.999, "float", "AdamW beta_2", minimum=0, maximum=0.99999),
        "epsilon": F(1e-8, "float", "AdamW epsilon", minimum=0, exclusive=True),
        "weight_decay": F(5e-4, "float",
                          "decoupled weight decay: each step w -= lr * weight_decay * w",
                          minimum=0),
        "decay_norm_and_bias": F(False, "bool", "also decay BatchNorm and bias weights"),
        "clip_norm": F(None, "float", "clip gradients to this global norm", minimum=0,
                       exclusive=True, nullable=True),
        "ema": F(False, "bool", "keep an exponential moving average of the weights"),
        "ema_momentum": F(0.999, "float", "EMA momentum", minimum=0, maximum=1),
        "bn_bias_lr_multiplier": F(1.0, "float", "learning-rate factor for BatchNorm offsets "
                                   "(airbench: 64 with model.bn_scale false)", minimum=0,
                                   exclusive=True),
        "lookahead_every": F(0, "int", "Lookahead: pull the weights back to their slow average "
                             "every N steps (0 = off)", minimum=0),
        "lookahead_decay": F(0.7737809375, "float", "Lookahead: the slow average's decay at the "
                             "end of training (it rises as (step/total)^3)", minimum=0,
                             maximum=0.999),
    },
    "schedule": {
        "name": F("onecycle", "str", "learning-rate schedule",
                  choices=("constant", "multistep", "cosine", "onecycle")),
        "warmup_epochs": F(0.0, "float", "linear warm-up (constant, multistep, cosine)",
                           minimum=0),
        "milestones": F([], "floats", "epochs at which multistep multiplies the lr by gamma"),
        "gamma": F(0.1, "float", "multistep factor", minimum=0, exclusive=True),
        "min_lr": F(0.0, "float", "final lr of cosine", minimum=0),
        "pct_start": F(0.25, "float", "one-cycle: fraction of training spent rising",
                       minimum=0, maximum=1, exclusive=True),
        "div_factor": F(25.0, "float", "one-cycle: start lr = lr / div_factor", minimum=1),
        "final_div_factor": F(1e4, "float", "one-cycle: final lr = start lr / final_div_factor",
                              minimum=1),
        "anneal": F("cos", "str", "one-cycle: shape of the fall after the peak (linear: "
                    "airbench's triangle)", choices=("cos", "linear")),
    },
    "precision": F("auto", "str", "compute precision",
                   choices=("auto", "float32", "mixed_bfloat16", "mixed_float16")),
    "strategy": F("auto", "str", "tf.distribute strategy",
                  choices=("auto", "none", "mirrored", "multiworker")),
    "seed": F(0, "int", "random seed (weights, shuffling, augmentation)", minimum=0,
              nullable=True),
    "deterministic": F(False, "bool", "deterministic ops (slower)"),
    "steps_per_execution": F("auto", "int_or_auto", "training steps per compiled call",
                             minimum=1),
    "jit_compile": F(False, "bool", "XLA compilation (slower than oneDNN on CPU)"),
    "fused_batchnorm": F(True, "bool", "train BatchNorm with TensorFlow's fused kernel"),
    "matmul_small_convs": F(True, "bool",
                            "train convolutions with at most 2x2 output pixels as matrix "
                            "multiplies"),
    "matmul_filter_gradients": F(True, "bool",
                                 "filter gradients of wide bfloat16 convolutions on maps of at "
                                 "most 8x8 as matrix multiplies, on CPUs"),
    "float32_activations": F(False, "bool",
                             "train bfloat16 GELU/SiLU layers in float32 on CPUs (faster there, "
                             "but airbench95 ended 0.4-0.5 points lower with it)"),
    "checkpoint": {
        "save_freq": F("epoch", "steps_or_epoch",
                       "backup for resume every epoch or every N steps", minimum=1),
        "monitor": F("val_accuracy", "str", "metric that picks best.keras"),
        "mode": F("auto", "str", "whether the monitor should rise or fall",
                  choices=("auto", "min", "max")),
    },
    "early_stopping": {
        "patience": F(0, "int", "epochs without improvement before stopping (0 = off)",
                      minimum=0),
        "monitor": F("val_loss", "str", "metric watched by early stopping"),
        "min_delta": F(0.0, "float", "smallest change that counts", minimum=0),
    },
    "tensorboard": F(True, "bool", "write TensorBoard logs to DIR/logs"),
    "verbose": F("auto", "int_or_auto", "0 silent, 1 progress bar, 2 one line per epoch",
                 minimum=0, maximum=2),
}

# Keys that may change when a run is resumed; the rest must match the saved config.
RESUMABLE_KEYS = ("epochs", "time_budget_minutes", "strategy", "verbose", "tensorboard",
                  "steps_per_execution", "jit_compile", "checkpoint.save_freq",
                  "early_stopping.patience",
                  "early_stopping.monitor", "early_stopping.min_delta", "data.cache",
                  "precision", "fused_batchnorm", "matmul_small_convs",
                  "matmul_filter_gradients", "float32_activations", "deterministic")


class ConfigError(ValueError):
    """Invalid configuration; ``errors`` holds one line per problem."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# -- helpers over the nested schema ---------------------------------------------------------

def iter_fields(schema=SCHEMA, prefix=""):
    """``(dotted_key, Field)`` for every leaf of the schema."""
    for key, value in schema.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from iter_fields(value, f"{dotted}.")
        else:
            yield dotted, value


def defaults() -> dict:
    """A fresh nested dict of every default."""
    def build(schema):
        return {k: build(v) if isinstance(v, dict) else copy.deepcopy(v.default)
                for k, v in schema.items()}
    return build(SCHEMA)


def get_dotted(config: dict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def set_dotted(config: dict, key: str, value) -> None:
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def flatten(config: dict, prefix="") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def deep_merge(base: dict, update: dict) -> dict:
    """``update`` laid over ``base`` (nested dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# -- loading ----------------------------------------------------------------------------------

def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``configs/``."""
    if not CONFIGS_DIR.is_dir():
        return []
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def recipe_path(name_or_path) -> Path:
    """A recipe file from a path or a name in ``configs/`` (``cifar10_fast``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (CONFIGS_DIR / f"{name_or_path}.yaml", CONFIGS_DIR / str(name_or_path)):
        if candidate.is_file():
            return candidate
    known = ", ".join(list_recipes()) or "none found"
    raise FileNotFoundError(f"no such config file or recipe: {name_or_path} "
                            f"(recipes: {known})")


def load_yaml(path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError([f"{path}{where}: not valid YAML "
                           f"({getattr(error, 'problem', None) or error})"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: a config must be a mapping of keys to values"])
    return data


def parse_overrides(items) -> dict:
    """``["optimizer.lr=0.05", "epochs=3"]`` or a dict -> a flat dict of dotted keys.

    Values are parsed as YAML (``true``, ``[30, 60]``, ``null``), so types follow what a
    recipe file would say; the schema then coerces strings such as ``5e-4`` to numbers.
    """
    if not items:
        return {}
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError([f"override {item!r} is not KEY=VALUE (e.g. optimizer.lr=0.05)"])
        key, _, text = item.partition("=")
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        out[key] = value
    return out


def _unflatten(flat: dict) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        set_dotted(nested, key, value)
    return nested


def _base_path(base, child: Path | None) -> Path:
    """``base:`` names a recipe in ``configs/`` or a file, relative to the recipe naming it."""
    if not isinstance(base, str) or not base.strip():
        where = f"{child}: " if child else ""
        raise ConfigError([f"{where}base: expected a recipe name or a file path, got {base!r}"])
    if child is not None and (child.parent / base).is_file():
        return (child.parent / base).resolve()
    return recipe_path(base).resolve()


def load_recipe(config=None, _seen=()) -> dict:
    """A recipe (``None``, a dict, a name in ``configs/`` or a path) as one nested layer.

    Dotted keys are allowed in dicts and files too (``{"optimizer.lr": 0.1}``). A recipe
    with ``base: OTHER`` is OTHER's layer with its own keys on top (nested sections merge
    key by key), so a variant states only what it changes; bases may have bases.
    """
    path = None
    if config is None:
        layer = {}
    elif isinstance(config, dict):
        layer = copy.deepcopy(config)
    else:
        path = recipe_path(config).resolve()
        if path in _seen:
            chain = " -> ".join(str(p.name) for p in (*_seen, path))
            raise ConfigError([f"{path}: base recipes form a cycle ({chain})"])
        layer = load_yaml(path)
    base = layer.pop("base", None)
    layer = deep_merge({}, _unflatten(flatten(layer)))
    if base is None:
        return layer
    seen = (*_seen, path) if path is not None else _seen
    return deep_merge(load_recipe(_base_path(base, path), seen), layer)


def load_config(config=None, overrides=None) -> dict:
    """Layer defaults, a recipe (name, path or dict) and overrides; not yet validated."""
    merged = deep_merge(defaults(), load_recipe(config))
    for key, value in parse_overrides(overrides).items():
        set_dotted(merged, key, value)
    return merged


# -- validation -------------------------------------------------------------------------------

_KIND_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "floats": "a list of numbers", "size": "an integer or [height, width]",
               "int_or_auto": "an integer or 'auto'", "steps_or_epoch": "'epoch' or an integer"}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _to_int(value):
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        number = float(value.strip())
        if number.is_integer():
            return int(number)
    raise TypeError


def _to_float(value):
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        number = float(value.strip())
    else:
        raise TypeError
    if not math.isfinite(number):
        raise TypeError
    return number


def _coerce(kind: str, value):
    """The value converted to its kind, or ``TypeError``/``ValueError``."""
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError
        return value
    if kind == "int":
        return _to_int(value)
    if kind == "float":
        return _to_float(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise TypeError
    if kind == "floats":
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return [_to_float(v) for v in value]
    if kind == "size":
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise TypeError
            return [_to_int(v) for v in value]
        size = _to_int(value)
        return [size, size]
    if kind in ("int_or_auto", "steps_or_epoch"):
        word = "auto" if kind == "int_or_auto" else "epoch"
        if isinstance(value, str) and value.strip().lower() == word:
            return word
        return _to_int(value)
    raise AssertionError(f"unknown field kind {kind}")


def _check_field(key: str, spec: Field, value, errors: list):
    if value is None:
        if not spec.nullable:
            errors.append(f"{key}: must be set ({_KIND_WORDS[spec.kind]})")
        return None
    try:
        value = _coerce(spec.kind, value)
    except (TypeError, ValueError):
        errors.append(f"{key}: expected {_KIND_WORDS[spec.kind]}, got {value!r}")
        return value
    if spec.choices and value not in spec.choices:
        errors.append(f"{key}: must be one of {', '.join(map(str, spec.choices))}; got {value!r}")
    numbers = value if isinstance(value, list) else [value]
    for number in numbers:
        if isinstance(number, str) or isinstance(number, bool):
            continue
        if spec.minimum is not None:
            if spec.exclusive and number <= spec.minimum:
                errors.append(f"{key}: must be greater than {spec.minimum:g}, got {number:g}")
                break
            if not spec.exclusive and number < spec.minimum:
                errors.append(f"{key}: must be at least {spec.minimum:g}, got {number:g}")
                break
        if spec.maximum is not None and number > spec.maximum:
            errors.append(f"{key}: must be at most {spec.maximum:g}, got {number:g}")
            break
    return value


def _suggest(key: str, section: dict, prefix: str) -> str:
    """A ' (did you mean ...?)' hint: a sibling with a close name, else any key whose last
    part matches (``lr`` at the top level -> ``optimizer.lr``)."""
    close = difflib.get_close_matches(key, list(section), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {prefix + close[0]!r}?)"
    leaves = [dotted for dotted, _ in iter_fields() if dotted.rsplit(".", 1)[-1] == key]
    return f" (did you mean {leaves[0]!r}?)" if leaves else ""


def _unknown_keys(config: dict, schema: dict, prefix: str, errors: list):
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if key not in schema:
            errors.append(f"{dotted}: unknown key{_suggest(str(key), schema, prefix)}")
        elif isinstance(schema[key], dict):
            if not isinstance(value, dict):
                errors.append(f"{dotted}: expected a mapping of "
                              f"{', '.join(schema[key])}, got {value!r}")
            else:
                _unknown_keys(value, schema[key], f"{dotted}.", errors)


def _check_relations(config: dict, errors: list):
    """Checks that involve more than one key, or knowledge outside the schema."""
    from keras_resnet.models import list_models

    if isinstance(config.get("arch"), str) and config["arch"] not in list_models():
        close = difflib.get_close_matches(config["arch"], list_models(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        errors.append(f"arch: unknown architecture {config['arch']!r}{hint}; "
                      f"see keras-resnet zoo list")
    augment = config["data"].get("augment")
    if isinstance(augment, str) and augment.strip().lower() != "none":
        from keras_resnet.data import parse_augment

        try:
            parse_augment(augment)
        except ValueError as error:
            errors.append(f"data.augment: {error}")
    epochs = config.get("epochs")
    schedule = config["schedule"]
    if config.get("time_budget_minutes") is not None:
        if schedule.get("name") == "multistep":
            errors.append("time_budget_minutes: needs a schedule that scales with the epochs "
                          "(onecycle, cosine or constant), not multistep")
        if config.get("strategy") == "multiworker":
            errors.append("time_budget_minutes: not with strategy multiworker (each worker "
                          "would measure its own speed)")
    if isinstance(epochs, int):
        milestones = schedule.get("milestones")
        if isinstance(milestones, list) and all(isinstance(m, float) for m in milestones):
            if milestones != sorted(milestones) or len(set(milestones)) != len(milestones):
                errors.append(f"schedule.milestones: must be strictly increasing, "
                              f"got {milestones}")
            elif milestones and not (0 < milestones[0] and milestones[-1] < epochs):
                errors.append(f"schedule.milestones: must lie between 0 and epochs ({epochs}), "
                              f"got {milestones}")
        if schedule.get("name") == "multistep" and not milestones:
            errors.append("schedule.milestones: multistep needs at least one milestone")
        warmup = schedule.get("warmup_epochs")
        if isinstance(warmup, float) and warmup >= epochs:
            errors.append(f"schedule.warmup_epochs: must be less than epochs ({epochs}), "
                          f"got {warmup:g}")
    optimizer = config["optimizer"]
    if optimizer.get("nesterov") is True and optimizer.get("name") in ("sgd", "muon") \
            and optimizer.get("momentum") == 0:
        errors.append("optimizer.nesterov: needs optimizer.momentum > 0")
    if optimizer.get("lookahead_every") and optimizer.get("ema") is True:
        errors.append("optimizer.lookahead_every: choose Lookahead or optimizer.ema, not both")


def validate(config: dict) -> dict:
    """A validated, type-normalised copy of ``config``; ``ConfigError`` lists every problem."""
    errors: list[str] = []
    _unknown_keys(config, SCHEMA, "", errors)
    if errors:
        raise ConfigError(errors)
    out = copy.deepcopy(config)
    for key, spec in iter_fields():
        set_dotted(out, key, _check_field(key, spec, get_dotted(out, key), errors))
    if not errors:
        _check_relations(out, errors)
    if errors:
        raise ConfigError(errors)
    return out


def resolve_config(config=None, overrides=None) -> dict:
    """Load, layer and validate: the config a run actually uses."""
    return validate(load_config(config, overrides))


def resume_config(saved: dict, config=None, overrides=None) -> dict:
    """The config of a resumed run: the saved one, where only ``RESUMABLE_KEYS`` may change.

    ``config`` and ``overrides`` are what the user passed again (a recipe, a dict, flags);
    repeating the original command with ``--resume`` is fine, changing e.g. the learning rate
    is an error (start a new run for that).
    """
    saved = validate(saved)
    merged = deep_merge(saved, load_recipe(config))
    for key, value in parse_overrides(overrides).items():
        set_dotted(merged, key, value)
    new = validate(merged)
    old_flat, new_flat = flatten(saved), flatten(new)
    errors = [f"{key}: cannot change when resuming (the run has {old_flat.get(key)!r}, asked "
              f"for {value!r}); start a new run in another directory instead"
              for key, value in new_flat.items()
              if key not in RESUMABLE_KEYS and old_flat.get(key) != value]
    if errors:
        raise ConfigError(errors)
    return new


# -- writing ----------------------------------------------------------------------------------

def dump_yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all (temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def default_file_mode() -> int:
    """The mode a plain ``open`` would give a new file (``mkstemp`` makes them private)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_config(config: dict, path) -> Path:
    return write_text_atomic(path, dump_yaml(config))
