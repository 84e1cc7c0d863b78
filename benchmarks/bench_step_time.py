"""Seconds per training step of a recipe's model, for variants of it side by side in one run.

Each variant is a list of ``KEY=VALUE`` overrides of the recipe (as ``keras-resnet fit`` takes
them). Each measurement runs in a fresh process: the recipe's model, precision and optimizer as
``fit`` builds them, on synthetic ``shapes`` images at 32x32 already in memory, a few warm-up
steps, then ``--steps`` timed steps. The variants are measured in turn, ``--repeats`` rounds
over all of them, so a machine that slows down or speeds up during the run affects them alike;
the figure per variant is its median, and the ratios are to the first variant.

    python benchmarks/bench_step_time.py --config cifar10_airbench95 \\
        "" "model.activation=relu" "model.activation=silu" "arch=airbench96"
    python benchmarks/bench_step_time.py --quick --config cifar10_airbench95 "" \\
        "model.activation=relu"      # smoke run: 2 steps, one round
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WARMUP_STEPS = 3


def measure(config_name: str, overrides: list[str], steps: int) -> float:
    """Seconds per step of one variant, in this (fresh) process."""
    import keras_resnet  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)

    import yaml
    from bench_training import prepare_like_fit

    from keras_resnet.training.config import resolve_config

    values = {key: yaml.safe_load(value)
              for key, value in (item.split("=", 1) for item in overrides)}
    batch = int(values.get("batch_size", resolve_config(config_name)["batch_size"]))
    values.update({"data.spec": f"shapes:classes=8,train={batch * steps},val=0,size=32",
                   "data.val_split": 0.0, "time_budget_minutes": None, "epochs": 1})
    model, data, _ = prepare_like_fit(resolve_config(config_name, values), steps)
    train = data.train.repeat()
    model.fit(train, epochs=1, steps_per_epoch=WARMUP_STEPS, verbose=0)
    start = time.perf_counter()
    model.fit(train, epochs=1, steps_per_epoch=steps, verbose=0)
    return (time.perf_counter() - start) / steps


def _measure_in_fresh_process(config: str, overrides: list[str], steps: int) -> float:
    from bench_training import json_from_fresh_process

    return json_from_fresh_process(
        [__file__, "--config", config, "--steps", str(steps), "--measure", *overrides],
        f"variant {overrides or '(recipe)'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="recipe name or YAML file")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all variants")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 steps, one round")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("variants", nargs="*",
                        help='each a quoted list of KEY=VALUE overrides; "" is the recipe')
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.config, args.variants, args.steps)))
        return
    if not args.variants:
        parser.error("give at least one variant (\"\" for the recipe as it is)")
    steps, repeats = (2, 1) if args.quick else (args.steps, args.repeats)
    variants = [variant.split() for variant in args.variants]
    times = {i: [] for i in range(len(variants))}
    for round_ in range(1, repeats + 1):
        for i, overrides in enumerate(variants):
            seconds = _measure_in_fresh_process(args.config, overrides, steps)
            times[i].append(seconds)
            print(f"round {round_}: {' '.join(overrides) or '(recipe)'}: {seconds:.3f} s/step",
                  flush=True)
    base = statistics.median(times[0])
    rows = []
    print(f"\n{args.config}, {steps} steps per measurement, median of {repeats}:")
    for i, overrides in enumerate(variants):
        median = statistics.median(times[i])
        rows.append({"overrides": overrides, "seconds_per_step": median, "all": times[i],
                     "ratio_to_first": median / base})
        print(f"  {' '.join(overrides) or '(recipe)':45s} {median:.3f} s/step  "
              f"{median / base:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"config": args.config, "steps": steps,
                                         "repeats": repeats, "variants": rows}, indent=1))


if __name__ == "__main__":
    main()
