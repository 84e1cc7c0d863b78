"""``keras-resnet plot``: training curves of one or more runs, overlaid."""
from __future__ import annotations

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, metavar="RUN_DIR_OR_HISTORY_CSV...")
@click.option("--output", "-o", default="curves.png", show_default=True,
              type=click.Path(dir_okay=False),
              help="Image to write (.png, .svg or .pdf).")
@click.option("--label", "labels", multiple=True,
              help="Legend name of each run, in order (default: the run directory's name).")
@click.option("--title", help="Figure title.")
def plot(runs, output, labels, title):
    """Plot loss, accuracy and learning rate per epoch (train solid, val dashed) of each run
    directory or history.csv, overlaid in one figure."""
    from keras_resnet.training.curves import plot_curves

    path = plot_curves(list(runs), output, labels=list(labels) or None, title=title)
    click.echo(f"Wrote {path}")
