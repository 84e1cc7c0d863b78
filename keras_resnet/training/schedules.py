"""Learning-rate schedules, stepped per optimizer iteration.

Cosine with linear warm-up and one-cycle are Keras's own ``CosineDecay`` (it has
``warmup_steps``/``warmup_target``): one-cycle is a linear rise from ``lr / div_factor`` to
``lr`` over ``pct_start`` of training, then a cosine fall to ``lr / (div_factor *
final_div_factor)``, as ``torch.optim.lr_scheduler.OneCycleLR`` with a linear warm-up phase.
Keras has no multi-step schedule with warm-up (``PiecewiseConstantDecay`` cannot warm up), so
``MultiStepDecay`` is written here; it also covers the constant schedule.

The schedules are never part of a saved model: the run directory's ``.keras`` files are saved
without the optimizer (see ``keras_resnet.training.checkpoints``), so plain Keras loads them.
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_resnet")
class MultiStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``lr * gamma ** (milestones passed)``, after a linear warm-up from 0 to ``lr``.

    Args:
        lr: the learning rate after warm-up.
        boundaries: steps at which the rate is multiplied by ``gamma`` (increasing).
        gamma: the factor.
        warmup_steps: steps of linear warm-up (0 = none).
    """

    def __init__(self, lr: float, boundaries=(), gamma: float = 0.1, warmup_steps: int = 0,
                 name: str = "MultiStepDecay"):
        super().__init__()
        self.lr = float(lr)
        self.boundaries = [int(b) for b in boundaries]
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        passed = ops.zeros((), "float32")
        for boundary in self.boundaries:
            passed = passed + ops.cast(ops.greater_equal(step, float(boundary)), "float32")
        rate = self.lr * ops.power(self.gamma, passed)
        if self.warmup_steps > 0:
            ramp = ops.minimum(1.0, (step + 1.0) / float(self.warmup_steps))
            rate = rate * ramp
        return rate

    def get_config(self):
        return {"lr": self.lr, "boundaries": self.boundaries, "gamma": self.gamma,
                "warmup_steps": self.warmup_steps, "name": self.name}


@keras.saving.register_keras_serializable(package="keras_resnet")
class LinearOneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """A triangle: linear from ``start`` to ``peak`` over ``rise_steps``, then linear to
    ``end`` at ``total_steps``, and ``end`` after that."""

    def __init__(self, start: float, peak: float, end: float, rise_steps: int,
                 total_steps: int, name: str = "LinearOneCycle"):
        super().__init__()
        self.start, self.peak, self.end = float(start), float(peak), float(end)
        self.rise_steps = max(1, int(rise_steps))
        self.total_steps = max(self.rise_steps + 1, int(total_steps))
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rise = ops.minimum(1.0, step / self.rise_steps)
        fall = ops.clip((step - self.rise_steps) / (self.total_steps - self.rise_steps), 0.0, 1.0)
        rising = self.start + (self.peak - self.start) * rise
        falling = self.peak + (self.end - self.peak) * fall
        return ops.where(step < self.rise_steps, rising, falling)

    def get_config(self):
        return {"start": self.start, "peak": self.peak, "end": self.end,
                "rise_steps": self.rise_steps, "total_steps": self.total_steps,
                "name": self.name}


def build_schedule(schedule: dict, lr: float, epochs: int, steps_per_epoch: int):
    """The schedule a config's ``schedule`` section describes, for ``epochs`` of
    ``steps_per_epoch`` optimizer steps. Epoch-valued settings become steps here."""
    total = max(1, int(epochs * steps_per_epoch))
    warmup = int(round(schedule.get("warmup_epochs", 0.0) * steps_per_epoch))
    name = schedule["name"]
    if name == "constant":
        return MultiStepDecay(lr, (), 1.0, warmup) if warmup else lr
    if name == "multistep":
        boundaries = [int(round(m * steps_per_epoch)) for m in schedule["milestones"]]
        return MultiStepDecay(lr, boundaries, schedule["gamma"], warmup)
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else lr,
            decay_steps=max(1, total - warmup),
            alpha=schedule.get("min_lr", 0.0) / lr,
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
    if name == "onecycle":
        rise = max(1, int(round(schedule["pct_start"] * total)))
        div, final_div = schedule["div_factor"], schedule["final_div_factor"]
        if schedule.get("anneal", "cos") == "linear":
            return LinearOneCycle(lr / div, lr, lr / (div * final_div), rise, total)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / div,
            decay_steps=max(1, total - rise),
            alpha=1.0 / (div * final_div),
            warmup_target=lr,
            warmup_steps=rise,
        )
    raise ValueError(f"schedule.name: unknown schedule {name!r}")


def lr_at(schedule, step: int) -> float:
    """The learning rate of ``schedule`` (or a float) at optimizer step ``step``."""
    if isinstance(schedule, (int, float)):
        return float(schedule)
    return float(ops.convert_to_numpy(schedule(step)))
