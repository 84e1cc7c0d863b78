"""Recipe options shared by ``fit``, ``tune`` and ``finetune``: the flags that override a
training recipe, their mapping onto config keys, and config errors as one line each."""
from __future__ import annotations

import contextlib
import sys

import click

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("auto", "none", "mirrored", "multiworker")
DATA_HELP = ("Dataset: a folder of class folders, an .npz, shapes[:options], cifar10, "
             "tfds:NAME; default: the recipe's.")

# click parameter name -> config key it overrides
RECIPE_FLAGS = {
    "arch": "arch", "data_spec": "data.spec", "epochs": "epochs", "batch_size": "batch_size",
    "lr": "optimizer.lr", "precision": "precision", "strategy": "strategy", "seed": "seed",
    "deterministic": "deterministic",
}

_RECIPE_OPTIONS = [
    click.option("--arch", help="Zoo architecture (keras-resnet zoo list); default: the "
                                "recipe's."),
    click.option("--data", "data_spec", metavar="SPEC", help=DATA_HELP),
    click.option("--config", "recipe", metavar="FILE|NAME",
                 help="Recipe: a YAML file or a name in configs/ (e.g. cifar10_fast); "
                      "default: the quick-start recipe."),
    click.option("--epochs", type=click.IntRange(min=1), help="Training epochs."),
    click.option("--batch-size", type=click.IntRange(min=1), help="Global batch size."),
    click.option("--lr", type=float, help="Peak learning rate."),
    click.option("--precision", type=click.Choice(PRECISIONS),
                 help="Compute precision; auto picks bfloat16 where the hardware is fast at "
                      "it."),
    click.option("--strategy", type=click.Choice(STRATEGIES),
                 help="tf.distribute strategy; multiworker reads TF_CONFIG."),
    click.option("--seed", type=click.IntRange(min=0), help="Random seed."),
    click.option("--deterministic", is_flag=True, default=None,
                 help="Deterministic ops (repeatable to the bit, slower)."),
]


def recipe_options(command):
    """Add the recipe flags and the trailing ``KEY=VALUE`` overrides to a click command."""
    command = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")(command)
    for option in reversed(_RECIPE_OPTIONS):
        command = option(command)
    return command


def overrides_from(flags: dict, pairs, keys: dict = RECIPE_FLAGS) -> dict:
    """Config overrides from the given flags (``None`` = not given) and ``KEY=VALUE`` pairs;
    the pairs win."""
    from keras_resnet.training.config import parse_overrides

    merged = {keys.get(name, name): value for name, value in flags.items() if value is not None}
    merged.update(parse_overrides(list(pairs)))
    return merged


@contextlib.contextmanager
def config_errors_exit():
    """Every config error on its own ``Error:`` line, then exit code 2."""
    from keras_resnet.training.config import ConfigError

    try:
        yield
    except ConfigError as error:
        for line in error.errors:
            click.echo(f"Error: {line}", err=True)
        sys.exit(2)


def exit_if_nan(result) -> None:
    if not result.ok:
        click.echo(f"Error: the loss became NaN; the run stopped and kept its last good "
                   f"checkpoint in {result.run_dir}", err=True)
        sys.exit(1)
