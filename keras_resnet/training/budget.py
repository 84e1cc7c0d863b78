"""Training to a time budget: as many epochs as fit in ``time_budget_minutes``.

A recipe tuned for an hour on one CPU runs far longer on a slower one, and leaves time unused
on a faster one. With a budget, ``fit`` times a few training steps of the compiled model before
training, restores the weights those steps changed, and trains ``floor(time left / estimated
epoch)`` epochs (at least 1, at most the config's ``epochs``), with the learning-rate schedule
and Lookahead sized to that count, as if the recipe had said it.

The estimate of an epoch: the timed steps' rate over the epoch's steps, plus its validation at
a third of a training step's cost per image (a forward pass without the backward one), plus
``EPOCH_MARGIN`` for what an epoch does besides (its first step's tracing, checkpoints).

The probe is a few seconds of training; a real epoch also validates, saves, and runs on a host
whose speed drifts (in one hour-long run on 2 cores the epochs ran 13% faster than planned,
two epochs' time unused; in another they sped up by a third after the second epoch). So the
plan is made again at the end of every epoch from ``REPLAN_AFTER_EPOCH`` on, while fewer than
``REPLAN_UNTIL`` of the planned epochs are done, from the mean time of the last
``EPOCHS_AVERAGED`` epochs, end to end (the first epoch fills the data cache and traces the
step, so it is never timed), taking fewer epochs at once and more only by ``GROW_AT_LEAST``;
``keras_resnet.training.callbacks.BudgetReplan`` resizes the schedule and Lookahead to each
new count. Later, most of the schedule is spent and a new count would bend its annealing (so a
first plan of fewer than 4 epochs is kept). The counts are written to
``DIR/time_budget.json``; a resumed run keeps them instead of measuring again.
Nothing here is exact: the figures there say how close it came, and
``tests/test_budget.py`` replays the epoch times of recorded hour-long runs through the rules.
"""
from __future__ import annotations

import json
import math
import time

# Fraction added to the estimated epoch time, for tracing, checkpoints and noise.
EPOCH_MARGIN = 0.03
# Timed compiled calls, after one untimed call that traces the step and fills the pipeline.
TIMED_CALLS = 1
# Validation costs about this fraction of a training step per image.
VALIDATION_COST = 1.0 / 3.0
# The plan is made again at the end of every epoch from this one (1-based) ...
REPLAN_AFTER_EPOCH = 2
# ... while fewer than this fraction of the planned epochs are done (at half, an hour-long
# run on a 2-core EPYC stopped re-planning just after its two slowest epochs and ended 6
# minutes early; at two thirds of 17 epochs, an 18th moves a linear one-cycle's rate by about
# 5% of its peak) ...
REPLAN_UNTIL = 2 / 3
# ... from the mean time of this many of the latest epochs (with two, one run planned from its
# two slowest epochs, 193 s against 163-189 s for the nine after them). A new count with fewer
# epochs is taken at once (the budget is a deadline); one with more only when it adds at least
# this fraction of the plan, rounded (rounded up, a 21-epoch plan needed 2 more, and a run
# with room for a 22nd ended 6 minutes early), and at least one epoch. Without that a long plan
# flapped on the host's noise (one 58-epoch run changed its count 14 times in 28 re-plans,
# between 55 and 58), and every change retraces the step and moves the learning rate.
EPOCHS_AVERAGED = 4
GROW_AT_LEAST = 0.05
BUDGET_FILE = "time_budget.json"


def epochs_within_budget(budget_seconds: float, elapsed_seconds: float, epoch_seconds: float,
                         max_epochs: int) -> int:
    """Whole epochs of ``epoch_seconds`` (plus the margin) that fit in what is left of the
    budget; at least 1, at most ``max_epochs``."""
    fitting = _whole_epochs(budget_seconds - elapsed_seconds, epoch_seconds, max_epochs)
    return int(max(1, min(max_epochs, fitting)))


def epochs_after_replan(budget_seconds: float, elapsed_seconds: float, epoch_seconds: float,
                        epochs_done: int, max_epochs: int) -> int:
    """The run's epochs in all, re-planned after ``epochs_done``: those plus the whole epochs
    of ``epoch_seconds`` (plus the margin) left in the budget. At least one more, so the
    resized schedule still anneals; at most ``max_epochs``."""
    more = _whole_epochs(budget_seconds - elapsed_seconds, epoch_seconds, max_epochs)
    return int(min(max_epochs, epochs_done + max(1, more)))


def settled_epochs(planned: int, proposed: int) -> int:
    """The count a re-plan keeps: ``proposed`` when it is fewer epochs than ``planned`` or at
    least ``GROW_AT_LEAST`` of them more, ``planned`` otherwise."""
    least_growth = max(1, round(GROW_AT_LEAST * planned))
    return proposed if proposed < planned or proposed - planned >= least_growth else planned


def replanned_epochs(planned: int, epoch_seconds: list, elapsed_seconds: float,
                     epochs_done: int, budget_seconds: float, max_epochs: int) -> dict:
    """The re-plan at the end of epoch ``epochs_done``, from the timed ``epoch_seconds`` so
    far: ``{"epoch_seconds", "proposed", "epochs"}`` (``epochs``: the count kept)."""
    estimate = recent_epoch_seconds(epoch_seconds)
    proposed = epochs_after_replan(budget_seconds, elapsed_seconds, estimate, epochs_done,
                                   max_epochs)
    return {"epoch_seconds": estimate, "proposed": proposed,
            "epochs": settled_epochs(planned, proposed)}


def replan_due(epochs_done: int, planned: int, max_epochs: int) -> bool:
    """Whether the plan is made again at the end of epoch ``epochs_done`` (1-based)."""
    return (REPLAN_AFTER_EPOCH <= epochs_done < max_epochs
            and epochs_done < REPLAN_UNTIL * planned)


def recent_epoch_seconds(epoch_seconds: list) -> float:
    """The estimate of the next epochs: the mean of the latest timed ones."""
    recent = epoch_seconds[-EPOCHS_AVERAGED:]
    return sum(recent) / len(recent)


def _whole_epochs(seconds_left: float, epoch_seconds: float, otherwise: int) -> int:
    if epoch_seconds <= 0:
        return otherwise
    return math.floor(seconds_left / (epoch_seconds * (1.0 + EPOCH_MARGIN)))


def _call_end_timer():
    import keras

    class CallEnds(keras.callbacks.Callback):
        """``perf_counter`` at the end of every compiled call."""

        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    return CallEnds()


def time_training_steps(model, train_ds, steps_per_call: int) -> float:
    """Seconds per training step of the compiled ``model`` on ``train_ds``: one untimed call
    (tracing, the input pipeline filling its buffers), then ``TIMED_CALLS`` timed ones. The
    weights, BatchNorm statistics included, are put back afterwards; the optimizer's state is
    not (recompile the model before training)."""
    weights = model.get_weights()
    timer = _call_end_timer()
    calls = 1 + TIMED_CALLS
    try:
        # Repeated: a small dataset may hold fewer batches than the probe's calls.
        model.fit(train_ds.repeat().take(calls * steps_per_call), epochs=1, verbose=0,
                  callbacks=[timer], shuffle=False)
    finally:
        model.set_weights(weights)
    if len(timer.times) < calls:
        raise RuntimeError("the time-budget probe ran out of training data")
    return (timer.times[-1] - timer.times[-1 - TIMED_CALLS]) / (TIMED_CALLS * steps_per_call)


def estimate_epoch_seconds(step_seconds: float, steps_per_epoch: int, val_images: int,
                           batch_size: int) -> float:
    """An epoch's training steps plus its validation pass."""
    validation = val_images / batch_size * step_seconds * VALIDATION_COST
    return step_seconds * steps_per_epoch + validation


def write_decision(path, decision: dict) -> None:
    from keras_resnet.training.config import write_text_atomic

    write_text_atomic(path, json.dumps(decision, indent=2) + "\n")


def read_decision(path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
