"""``keras-resnet zoo``: list the model zoo and show one entry."""
from __future__ import annotations

import json

import click


@click.group()
def zoo():
    """Browse the model zoo."""


@zoo.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.option("--recompute", is_flag=True,
              help="Build every model to recompute the figures instead of reading the card.")
def list_command(fmt, recompute):
    """List every architecture with parameters and GFLOPs (multiply-adds) at 224x224 and 32x32."""
    from keras_resnet.models.card import compute_card, load_card

    rows = compute_card() if recompute else load_card()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    header = f"{'name':<18} {'family':<19} {'block':<10} {'depth':>5} {'classes':>7} " \
             f"{'params':>12} {'GFLOPs@224':>10} {'GFLOPs@32':>9}"
    click.echo(header)
    click.echo("-" * len(header))
    for r in rows:
        click.echo(f"{r['name']:<18} {r['family']:<19} {r['block']:<10} {r['depth']:>5} "
                   f"{r['num_classes']:>7} {r['params']:>12,} {r['gflops_224']:>10.3f} "
                   f"{r['gflops_32']:>9.4f}")


@zoo.command("info")
@click.argument("name")
@click.option("--input-size", type=click.IntRange(min=8), default=224, show_default=True,
              help="Square input size for the FLOPs figure.")
@click.option("--num-classes", type=click.IntRange(min=1), default=None,
              help="Classifier outputs (default: the entry's).")
def info_command(name, input_size, num_classes):
    """Show one architecture's spec, parameters and FLOPs."""
    from keras_resnet.models import get_spec, model_info

    spec = get_spec(name)
    info = model_info(name, input_size, num_classes)
    info["spec"] = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}
    click.echo(json.dumps(info, indent=2))
