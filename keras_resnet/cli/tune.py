"""``keras-resnet tune``: a thin click layer over ``keras_resnet.tune``."""
from __future__ import annotations

import sys

import click

from keras_resnet.cli.recipe import config_errors_exit, overrides_from, recipe_options

SEARCHES = ("random", "grid", "bayesian", "hyperband")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--space", required=True, type=click.Path(dir_okay=False), metavar="SPACE.yaml",
              help="Search space: recipe keys and their ranges (examples in configs/spaces/).")
@click.option("--search", type=click.Choice(SEARCHES), default="random", show_default=True,
              help="keras-tuner strategy; grid needs discrete values (lists or steps).")
@click.option("--trials", type=click.IntRange(min=1),
              help="Most trials in all, counting finished ones of this search [default: 10; "
                   "grid: the whole grid; hyperband: its own budget from --epochs].")
@click.option("--folds", type=click.IntRange(min=2), metavar="K",
              help="Score each trial by stratified K-fold cross-validation over the training "
                   "images (mean and standard deviation).")
@click.option("--objective", metavar="METRIC[:max|min]",
              help="Metric to optimise [default: the space's, else val_accuracy].")
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Search directory [default: runs/tune-ARCH-SPACE]; the same command run "
                   "again continues the search in it.")
@recipe_options
def tune(space, search, trials, folds, objective, output, arch, data_spec, recipe, epochs,
         batch_size, lr, precision, strategy, seed, deterministic, overrides):
    """Search a recipe's hyperparameters with keras-tuner and write trials.csv, trials.png and
    best.yaml (a complete recipe: keras-resnet fit --config DIR/best.yaml).

    Takes the same recipe options as fit; KEY=VALUE pairs override any recipe value.

    \b
    Examples:
      keras-resnet tune --space configs/spaces/lr_wd.yaml --trials 8 -o runs/tune
      keras-resnet tune --config cifar10_resnet18 --data ../cifar10/train \\
          --space configs/spaces/grid_lr_batch.yaml --search grid --folds 3
    """
    flags = dict(arch=arch, data_spec=data_spec, epochs=epochs, batch_size=batch_size, lr=lr,
                 precision=precision, strategy=strategy, seed=seed, deterministic=deterministic)
    with config_errors_exit():
        merged = overrides_from(flags, overrides)
        from keras_resnet.training.tune import TrialsFailed, tune as run_tune

        try:
            result = run_tune(recipe, space, search=search, trials=trials, folds=folds,
                              output=output, objective=objective, overrides=merged)
        except TrialsFailed as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)

    done = sum(row["status"] == "completed" for row in result.trials)
    click.echo(f"Trials: {done} completed of {len(result.trials)} "
               f"({result.output / 'trials.csv'}, {result.output / 'trials.png'})")
    if result.best_score is None:
        click.echo("Error: no trial completed, so there is no best recipe", err=True)
        sys.exit(1)
    std = f" ± {result.best_std:.4f}" if result.best_std is not None else ""
    values = ", ".join(f"{k}={v}" for k, v in result.best_values.items())
    click.echo(f"Best {result.objective}: {result.best_score:.4f}{std} with {values}")
    click.echo(f"Train it: keras-resnet fit --config {result.best_yaml}")
