"""``keras-resnet evaluate``: figures, report and confusion matrix for one model or an ensemble."""
from __future__ import annotations

import click

from keras_resnet.evaluation.api import SPLITS
from keras_resnet.evaluation.ensemble import tta_names


@click.command()
@click.argument("models", nargs=-1, required=True, metavar="MODEL [MODEL ...]")
@click.option("--data", "data_spec", required=True, metavar="SPEC",
              help="Labelled data: a folder of class subfolders, cifar10, tfds:NAME, an .npz, "
                   "shapes, ... (see docs/data.md).")
@click.option("--split", type=click.Choice(SPLITS), default="val", show_default=True,
              help="Which images to evaluate on; 'all' takes every image of the source "
                   "(a held-out folder without split subfolders).")
@click.option("--tta", type=click.Choice(tta_names()), default="none", show_default=True,
              help="Test-time augmentation: 'flip' averages each image and its mirror; "
                   "'flip-translate' adds the mirror pairs shifted one pixel each way.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the report as JSON here (the confusion matrix PNG goes next to it).")
@click.option("--confusion-png", type=click.Path(dir_okay=False), default=None,
              help="Where to write the confusion matrix heatmap "
                   "[default: next to --output, REPORT_confusion.png].")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="What to print: a readable table or the JSON report.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--val-split", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.1,
              show_default=True,
              help="Validation share when the data has no val folder (match training's).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the train/val split when the data has no val folder "
                   "(match training's data.split_seed, not its --seed).")
@click.option("--strict", is_flag=True, help="Fail on unreadable images instead of skipping them.")
def evaluate(models, data_spec, split, tta, output, confusion_png, fmt, batch_size, val_split,
             seed, strict):
    """Evaluate MODEL (a .keras file, run directory or exported artifact) on labelled data.

    With several models, each one's figures and their ensemble's (mean of probabilities).
    """
    from keras_resnet.evaluation import evaluate as run_evaluation
    from keras_resnet.evaluation.report import format_report, to_json

    report = run_evaluation(list(models), data_spec, split=split, tta=tta, batch_size=batch_size,
                            output=output, confusion_png=confusion_png, val_split=val_split,
                            seed=seed, strict=strict)
    click.echo(to_json(report) if fmt == "json" else format_report(report), nl=fmt != "json")
    if fmt == "table":
        for label, key in (("Report", None), ("Confusion matrix", "confusion_matrix_png")):
            path = output if key is None else report.get(key)
            if path:
                click.echo(f"{label} written to {path}")
