"""``keras-resnet fit``: a thin click layer over ``keras_resnet.fit``."""
from __future__ import annotations

import sys

import click

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("auto", "none", "mirrored", "multiworker")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--arch", help="Zoo architecture (keras-resnet zoo list); default: the recipe's.")
@click.option("--data", "data_spec", metavar="SPEC",
              help="Dataset: a folder of class folders, an .npz, shapes[:options], cifar10, "
                   "tfds:NAME; default: the recipe's.")
@click.option("--config", "recipe", metavar="FILE|NAME",
              help="Recipe: a YAML file or a name in configs/ (e.g. cifar10_fast); default: "
                   "the quick-start recipe.")
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Global batch size.")
@click.option("--lr", type=float, help="Peak learning rate.")
@click.option("--precision", type=click.Choice(PRECISIONS),
              help="Compute precision; auto picks bfloat16 where the hardware is fast at it.")
@click.option("--strategy", type=click.Choice(STRATEGIES),
              help="tf.distribute strategy; multiworker reads TF_CONFIG.")
@click.option("--output", "-o", type=click.Path(file_okay=False),
              help="Run directory (default runs/ARCH-TIMESTAMP); must be new or empty.")
@click.option("--resume", is_flag=True, help="Continue the run in --output from its last backup.")
@click.option("--init-from", metavar="SOURCE",
              help="Start from a pretrained network's weights (a .keras file, a run directory, "
                   "keras:NAME[=WEIGHTS]) with a new head; see keras-resnet finetune.")
@click.option("--seed", type=click.IntRange(min=0), help="Random seed.")
@click.option("--deterministic", is_flag=True, default=None,
              help="Deterministic ops (repeatable to the bit, slower).")
@click.option("--list-recipes", is_flag=True, help="List the recipes in configs/ and exit.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def fit(arch, data_spec, recipe, epochs, batch_size, lr, precision, strategy, output, resume,
        init_from, seed, deterministic, list_recipes, overrides):
    """Train a ResNet and write a run directory (config.yaml, history.csv, checkpoints/,
    best.keras, model.keras, metrics.json, curves.png).

    KEY=VALUE pairs override any config value, with dotted keys for nested ones, e.g.
    optimizer.weight_decay=5e-4 schedule.name=cosine data.augment=cifar+randaugment.

    \b
    Examples:
      keras-resnet fit --arch resnet20 --output runs/quickstart
      keras-resnet fit --config cifar10_fast --data ../cifar10/train -o runs/c10
      keras-resnet fit --output runs/c10 --resume
    """
    from keras_resnet.training.config import ConfigError, list_recipes as recipes

    if list_recipes:
        for name in recipes():
            click.echo(name)
        return
    flags = {"arch": arch, "data.spec": data_spec, "epochs": epochs, "batch_size": batch_size,
             "optimizer.lr": lr, "precision": precision, "strategy": strategy, "seed": seed,
             "deterministic": deterministic}
    merged = {key: value for key, value in flags.items() if value is not None}
    try:
        from keras_resnet.training.config import parse_overrides

        merged.update(parse_overrides(list(overrides)))
        from keras_resnet.training.fit import fit as run_fit

        initial = {}
        if init_from:
            from keras_resnet.training.finetune import InitFrom

            model = InitFrom(init_from)
            merged.update(model.overrides)
            initial = {"model": model, "metadata": model.metadata, "arch_name": model.arch}
        result = run_fit(recipe, output=output, resume=resume, overrides=merged, **initial)
    except ConfigError as error:
        for line in error.errors:
            click.echo(f"Error: {line}", err=True)
        sys.exit(2)
    if not result.ok:
        click.echo(f"Error: the loss became NaN; the run stopped and kept its last good "
                   f"checkpoint in {result.run_dir}", err=True)
        sys.exit(1)
