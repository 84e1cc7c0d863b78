"""``keras-resnet fit``: a thin click layer over ``keras_resnet.fit``."""
from __future__ import annotations

import click

from keras_resnet.cli.recipe import (RECIPE_FLAGS, config_errors_exit, exit_if_nan,
                                    overrides_from, recipe_options)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@recipe_options
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Run directory (default runs/ARCH-TIMESTAMP); must be new or empty.")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last backup.")
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), metavar="MINUTES",
              help="Train as many epochs as fit in MINUTES on this machine (at most the "
                   "recipe's epochs); sets time_budget_minutes.")
@click.option("--init-from", metavar="SOURCE",
              help="Start from a pretrained network's weights (a .keras file, a run directory, "
                   "keras:NAME[=WEIGHTS]) with a new head; see keras-resnet finetune.")
@click.option("--list-recipes", is_flag=True, help="List the recipes in configs/ and exit.")
def fit(arch, data_spec, recipe, epochs, batch_size, lr, precision, strategy, output, resume,
        time_budget, init_from, seed, deterministic, list_recipes, overrides):
    """Train a ResNet and write a run directory (config.yaml, history.csv, checkpoints/,
    best.keras, model.keras, metrics.json, curves.png).

    KEY=VALUE pairs override any config value, with dotted keys for nested ones, e.g.
    optimizer.weight_decay=5e-4 schedule.name=cosine data.augment=cifar+randaugment.

    \b
    Examples:
      keras-resnet fit --arch resnet20 --output runs/quickstart
      keras-resnet fit --config cifar10_fast --data ../cifar10/train -o runs/c10
      keras-resnet fit --config cifar10_fast --time-budget 30 -o runs/c10-30min
      keras-resnet fit --output runs/c10 --resume
    """
    from keras_resnet.training.config import list_recipes as recipes

    if list_recipes:
        for name in recipes():
            click.echo(name)
        return
    flags = dict(arch=arch, data_spec=data_spec, epochs=epochs, batch_size=batch_size, lr=lr,
                 precision=precision, strategy=strategy, seed=seed, deterministic=deterministic,
                 time_budget=time_budget)
    with config_errors_exit():
        merged = overrides_from(flags, overrides,
                                {**RECIPE_FLAGS, "time_budget": "time_budget_minutes"})
        from keras_resnet.training.fit import fit as run_fit

        initial = {}
        if init_from:
            from keras_resnet.training.finetune import InitFrom

            model = InitFrom(init_from)
            merged.update(model.overrides)
            initial = {"model": model, "metadata": model.metadata, "arch_name": model.arch}
        result = run_fit(recipe, output=output, resume=resume, overrides=merged, **initial)
    exit_if_nan(result)
