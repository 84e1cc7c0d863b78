"""``keras-resnet predict``: top-k classes for images and folders of images."""
from __future__ import annotations

import csv
import io
import json

import click

from keras_resnet.evaluation.ensemble import tta_names


def format_table(results) -> str:
    width = max([4] + [len(r["path"]) for r in results])
    lines = []
    for r in results:
        if "error" in r:
            lines.append(f"{r['path']:<{width}}  ERROR: {r['error']}")
        else:
            guesses = "  ".join(f"{p['class']} {100 * p['probability']:.2f}%"
                                for p in r["predictions"])
            lines.append(f"{r['path']:<{width}}  {guesses}")
    return "\n".join(lines)


def format_csv(results, k: int) -> str:
    """One row per image: path, top1, top1_probability, ..., error."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["path"]
    for rank in range(1, k + 1):
        header += [f"top{rank}", f"top{rank}_probability"]
    writer.writerow(header + ["error"])
    for r in results:
        row = [r["path"]]
        guesses = r.get("predictions", [])
        for rank in range(k):
            row += ([guesses[rank]["class"], f"{guesses[rank]['probability']:.6f}"]
                    if rank < len(guesses) else ["", ""])
        writer.writerow(row + [r.get("error", "")])
    return buffer.getvalue().rstrip("\n")


@click.command()
@click.argument("model")
@click.argument("paths", nargs=-1, required=True, metavar="IMAGE_OR_FOLDER ...")
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many classes to show per image.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--tta", type=click.Choice(tta_names()), default="none", show_default=True,
              help="Test-time augmentation: 'flip' averages each image and its mirror; "
                   "'flip-translate' adds the mirror pairs shifted one pixel each way.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
def predict(model, paths, top_k, fmt, tta, batch_size):
    """Top-k class names and probabilities for each image, using the model's saved class names.

    MODEL is a .keras file, run directory or exported artifact. Unreadable files are reported
    per file and the rest go on; the exit code is non-zero only when no image could be predicted.
    """
    from keras_resnet.evaluation import predict as run_predict

    results = run_predict(model, list(paths), top_k=top_k, tta=tta, batch_size=batch_size)
    if fmt == "json":
        click.echo(json.dumps({"model": model, "top_k": top_k, "results": results}, indent=2))
    elif fmt == "csv":
        click.echo(format_csv(results, top_k))
    else:
        click.echo(format_table(results))
    failed = sum("error" in r for r in results)
    if failed:
        click.echo(f"{failed} of {len(results)} path(s) could not be predicted", err=True)
    if failed == len(results):
        raise ValueError(f"nothing could be predicted: all {len(results)} path(s) failed"
                         f" (first: {results[0]['path']}: {results[0]['error']})")
