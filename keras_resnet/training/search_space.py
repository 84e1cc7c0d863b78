"""Search spaces: a small YAML file of recipe keys and their ranges, read into keras-tuner
``HyperParameters``.

The format (see ``configs/spaces/`` for examples)::

    objective: val_accuracy          # optional; or {name: val_loss, direction: min}
    hyperparameters:
      lr: {min: 0.01, max: 0.4, log: true}        # float: both bounds given, one is a float
      weight_decay: {min: 1.0e-5, max: 1.0e-3, log: true}
      batch_size: [64, 128, 256]                  # a list: one of these values
      label_smoothing: {min: 0.0, max: 0.2, step: 0.05}
      arch: {values: [resnet20, resnet32, resnet44]}
      epochs: {min: 2, max: 6, step: 2}           # int: both bounds are integers
      nesterov: {type: bool}

Each name is a key of the training recipe (``a.b`` for a nested key). ``type`` may be given
(``float``, ``int``, ``choice``, ``bool``) and is otherwise inferred. A log-sampled range with a
``step`` moves by that factor (``{min: 1.0e-3, max: 0.1, step: 10, log: true}`` is 0.001, 0.01,
0.1), which is how a grid search gets a log grid.

Everything here is checked before the first trial, and every problem is one line naming the
file and the hyperparameter. Whether a value suits the recipe (a known key, an accepted type and
range) is checked by the training config's own validation, in ``tune.py``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

KINDS = ("float", "int", "choice", "bool")
FIELDS = {"type", "min", "max", "step", "log", "values"}
TOP_LEVEL = {"objective", "hyperparameters"}
DIRECTIONS = ("min", "max")
DEFAULT_OBJECTIVE = "val_accuracy"
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Objective:
    """The metric a search optimises: a Keras log name (``val_accuracy``) and a direction."""

    name: str
    direction: str

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "max" else a < b

    def best_of(self, values):
        return max(values) if self.direction == "max" else min(values)

    def __str__(self):
        return f"{self.name} ({self.direction})"


def infer_direction(name: str) -> str | None:
    """``max`` for accuracies, ``min`` for losses and errors; ``None`` when the name says
    neither (the user then gives the direction)."""
    bare = name.lower()
    if bare.startswith("val_"):
        bare = bare[4:]
    if "loss" in bare or "error" in bare or bare in {"crossentropy", "ce"}:
        return "min"
    if "acc" in bare or "auc" in bare or "precision" in bare or "recall" in bare:
        return "max"
    return None


def parse_objective(value, where: str = "objective") -> Objective:
    """``"val_accuracy"``, ``"val_top5:max"`` or ``{name: ..., direction: ...}``."""
    if value is None:
        value = DEFAULT_OBJECTIVE
    if isinstance(value, dict):
        unknown = set(value) - {"name", "direction"}
        if unknown:
            raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r} (use name and "
                             "direction)")
        name, direction = value.get("name"), value.get("direction")
    elif isinstance(value, str):
        name, _, direction = value.partition(":")
        direction = direction or None
    else:
        raise ValueError(f"{where}: expected a metric name such as val_accuracy, got {value!r}")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: the objective needs a metric name such as val_accuracy")
    name = name.strip()
    direction = (direction.strip().lower() if isinstance(direction, str) else direction)
    if direction is None:
        direction = infer_direction(name)
        if direction is None:
            raise ValueError(f"{where}: cannot tell whether {name!r} should be maximised or "
                             f"minimised: write {name}:max or {name}:min")
    if direction not in DIRECTIONS:
        raise ValueError(f"{where}: direction must be min or max, got {direction!r}")
    return Objective(name, direction)


def _number(value, what: str):
    """YAML 1.1 reads ``1e-5`` (no dot) as a string; accept it as the number it means."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
    raise ValueError(f"{what} must be a number, got {value!r}")


@dataclass(frozen=True)
class Hyperparameter:
    """One searched recipe key and the values it may take."""

    name: str
    kind: str
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    log: bool = False
    values: tuple = ()

    def declare(self, hp):
        """Register this hyperparameter on a keras-tuner ``HyperParameters`` and return its
        value for the current trial.

        A float range with a step is declared as an ordered ``Choice`` of its points:
        keras-tuner counts a float grid with ``floor((max - min) / step)``, which drops the
        top end through round-off (0 to 0.3 by 0.1 gives 0, 0.1, 0.2) and yields values such
        as 0.15000000000000002.
        """
        if self.kind == "float" and self.step is not None:
            return hp.Choice(self.name, self.grid(), ordered=True)
        if self.kind == "float":
            return hp.Float(self.name, self.min, self.max,
                            sampling="log" if self.log else "linear")
        if self.kind == "int":
            return hp.Int(self.name, self.min, self.max, step=self.step or 1,
                          sampling="log" if self.log else "linear")
        if self.kind == "bool":
            return hp.Boolean(self.name)
        return hp.Choice(self.name, list(self.values), ordered=False)

    def grid(self) -> list | None:
        """Every value a grid search visits, or ``None`` for a continuous range."""
        if self.kind == "bool":
            return [False, True]
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "float" and self.step is None:
            return None
        step = self.step or 1
        # A log range multiplies by step, a linear one adds it (keras-tuner's rule).
        if self.log:
            count = math.floor(math.log(self.max / self.min) / math.log(step) + 1e-9) + 1
            points = [self.min * step ** i for i in range(count)]
        else:
            count = math.floor((self.max - self.min) / step + 1e-9) + 1
            points = [self.min + i * step for i in range(count)]
        if self.kind == "int":
            return [int(round(p)) for p in points]
        return [float(f"{p:.12g}") for p in points]

    def examples(self) -> list:
        """Values that show whether the recipe accepts this hyperparameter's range: the two
        ends of a range, every choice."""
        if self.kind in ("float", "int"):
            return [self.min, self.max]
        return list(self.grid())

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name}: one of {list(self.values)}"
        if self.kind == "bool":
            return f"{self.name}: true or false"
        scale = ", log" if self.log else ""
        step = f", step {self.step}" if self.step is not None else ""
        return f"{self.name}: {self.kind} in [{self.min}, {self.max}]{step}{scale}"

    def to_dict(self) -> dict:
        out = {"type": self.kind}
        if self.kind in ("float", "int"):
            out.update(min=self.min, max=self.max, log=self.log)
            if self.step is not None:
                out["step"] = self.step
        if self.kind == "choice":
            out["values"] = list(self.values)
        return out


@dataclass(frozen=True)
class SearchSpace:
    hyperparameters: tuple[Hyperparameter, ...]
    objective: Objective
    source: str = "<space>"

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hyperparameters]

    def declare(self, hp) -> dict:
        """Declare every hyperparameter on ``hp``; returns {name: value of this trial}."""
        return {h.name: h.declare(hp) for h in self.hyperparameters}

    def grid_size(self) -> int | None:
        """Number of points of the full grid, ``None`` when a range is continuous."""
        size = 1
        for h in self.hyperparameters:
            values = h.grid()
            if values is None:
                return None
            size *= len(values)
        return size

    def require_grid(self):
        continuous = [h.name for h in self.hyperparameters if h.grid() is None]
        if continuous:
            raise ValueError(f"{self.source}: grid search needs discrete values, but "
                             f"{continuous[0]!r} is a continuous range: give it a step or a "
                             "list of values")

    def to_dict(self) -> dict:
        return {"objective": {"name": self.objective.name,
                              "direction": self.objective.direction},
                "hyperparameters": {h.name: h.to_dict() for h in self.hyperparameters}}


def _infer_kind(spec: dict) -> str:
    if "values" in spec:
        return "choice"
    if "min" in spec or "max" in spec:
        numbers = [spec.get("min"), spec.get("max"), spec.get("step")]
        numbers = [n for n in numbers if n is not None]
        ints = all(isinstance(_number(n, "min/max"), int) for n in numbers)
        return "int" if ints else "float"
    raise ValueError("give a list of values, or min and max")


def parse_hyperparameter(name, spec, source: str = "<space>") -> Hyperparameter:
    where = f"{source}: hyperparameter {name!r}"
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"{source}: bad hyperparameter name {name!r}: use a recipe key "
                         "such as lr or optimizer.weight_decay")
    if isinstance(spec, list):
        spec = {"values": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a list of values or a mapping with min and max, "
                         f"got {spec!r}")
    unknown = set(spec) - FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r} (fields: "
                         f"{', '.join(sorted(FIELDS))})")
    try:
        kind = spec["type"] if "type" in spec else _infer_kind(spec)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown type {kind!r} (use {', '.join(KINDS)})")
    given = set(spec) - {"type"}
    allowed = {"float": {"min", "max", "step", "log"}, "int": {"min", "max", "step", "log"},
               "choice": {"values"}, "bool": set()}[kind]
    if given - allowed:
        raise ValueError(f"{where}: field {sorted(given - allowed)[0]!r} does not apply to a "
                         f"{kind} hyperparameter")

    if kind == "bool":
        return Hyperparameter(name, "bool")
    if kind == "choice":
        return Hyperparameter(name, "choice", values=_choice_values(spec.get("values"), where))

    if "min" not in spec or "max" not in spec:
        raise ValueError(f"{where}: a {kind} range needs both min and max")
    try:
        low, high = _number(spec["min"], "min"), _number(spec["max"], "max")
        step = None if spec.get("step") is None else _number(spec["step"], "step")
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}: log must be true or false, got {log!r}")
    if kind == "int":
        for label, value in (("min", low), ("max", high), ("step", step)):
            if value is not None and (not float(value).is_integer()):
                raise ValueError(f"{where}: {label} of an int range must be a whole number, "
                                 f"got {value!r}")
        low, high = int(low), int(high)
        step = None if step is None else int(step)
    else:
        low, high = float(low), float(high)
        step = None if step is None else float(step)
    if not all(math.isfinite(v) for v in (low, high)):
        raise ValueError(f"{where}: min and max must be finite")
    if not low < high:
        raise ValueError(f"{where}: bad range: min ({low}) must be below max ({high})")
    if log and low <= 0:
        raise ValueError(f"{where}: a log range must be positive, got min {low}")
    if step is not None:
        if log and not step > 1:
            raise ValueError(f"{where}: the step of a log range is a factor and must be above "
                             f"1, got {step}")
        if not step > 0:
            raise ValueError(f"{where}: step must be positive, got {step}")
        if not log and step > high - low:
            raise ValueError(f"{where}: step {step} is larger than the range {low}..{high}")
    return Hyperparameter(name, kind, min=low, max=high, step=step, log=log)


def _choice_values(values, where: str) -> tuple:
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: values must be a non-empty list, got {values!r}")
    for value in values:
        if not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"{where}: values must be numbers, strings or booleans, got "
                             f"{value!r}")
    types = {type(v) for v in values}
    if types == {int, float}:
        values = [float(v) for v in values]   # keras-tuner wants one type per Choice
    elif len(types) > 1:
        raise ValueError(f"{where}: values mix types ({', '.join(sorted(t.__name__ for t in types))}): "
                         "use one type per hyperparameter")
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: values repeat: {values}")
    return tuple(values)


def parse_space(data, source: str = "<space>") -> SearchSpace:
    """A search space from already-loaded YAML (a dict); see the module docstring."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a search space is a mapping with a 'hyperparameters' "
                         "section")
    unknown = set(data) - TOP_LEVEL
    if unknown:
        raise ValueError(f"{source}: unknown section {sorted(unknown)[0]!r} (sections: "
                         f"{', '.join(sorted(TOP_LEVEL))})")
    entries = data.get("hyperparameters")
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"{source}: 'hyperparameters' must map recipe keys to ranges or "
                         "lists of values, and name at least one")
    hyperparameters = tuple(parse_hyperparameter(name, spec, source)
                            for name, spec in entries.items())
    objective = parse_objective(data.get("objective"), f"{source}: objective")
    return SearchSpace(hyperparameters, objective, source)


def load_space(path) -> SearchSpace:
    """Read and check a search-space YAML file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such search-space file: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"{path}: not valid YAML{at}: "
                         f"{getattr(error, 'problem', None) or error}") from None
    return parse_space(data, str(path))
