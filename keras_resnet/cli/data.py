"""``keras-resnet data``: inspect a dataset before training on it."""
from __future__ import annotations

import json

import click


@click.group()
def data():
    """Inspect datasets (folders, .npz, CIFAR batches, shapes, tfds:NAME)."""


@data.command("check")
@click.argument("spec")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")
@click.option("--strict", is_flag=True,
              help="Fail (exit 2) when any file cannot be decoded or a class folder is empty.")
@click.option("--val-split", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Also show the stratified train/val split training would make "
                   "(when the data has no validation split).")
def check_command(spec, fmt, strict, val_split):
    """Scan SPEC: classes, counts per class and split, image sizes, bad files.

    SPEC is a folder of class subfolders (optionally in train/ val/ test/), an .npz file, a
    cifar-10-batches-py folder, shapes[:options], cifar10, cifar100 or tfds:NAME. Bad files
    are listed and would be skipped by training; --strict refuses them.
    """
    from keras_resnet.data import check_data

    report = check_data(spec, strict=strict, val_split=val_split)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    click.echo(format_report(report))


def format_report(report: dict) -> str:
    lines = [f"data:     {report['spec']} ({report['source']})",
             f"classes:  {report['num_classes']}",
             f"images:   {report['num_images']}"]
    sizes = report["image_sizes"]
    if sizes:
        shown = ", ".join(f"{size} ({count})" for size, count in list(sizes.items())[:5])
        more = f", and {len(sizes) - 5} more sizes" if len(sizes) > 5 else ""
        lines.append(f"sizes:    {shown}{more}")
    splits = list(report["splits"])
    width = max([len(name) for name in report["classes"]] + [5])
    header = f"  {'class':<{width}} " + " ".join(f"{s:>7}" for s in splits) + f" {'total':>7}"
    lines += ["", header, "  " + "-" * (len(header) - 2)]
    for name in report["classes"]:
        row = " ".join(f"{report['splits'][s]['counts'][name]:>7}" for s in splits)
        lines.append(f"  {name:<{width}} {row} {report['counts'][name]:>7}")
    totals = " ".join(f"{report['splits'][s]['num_images']:>7}" for s in splits)
    lines.append(f"  {'total':<{width}} {totals} {report['num_images']:>7}")
    bad = report["bad_files"]
    lines += ["", f"bad files: {len(bad)}" + (" (skipped by training; --strict refuses them)"
                                              if bad else "")]
    lines += [f"  {item['path']}: {item['reason']}" for item in bad]
    if report["warnings"]:
        lines += ["", "warnings:"] + [f"  {w}" for w in report["warnings"]]
    return "\n".join(lines)
