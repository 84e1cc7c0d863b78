"""Training curves: loss, accuracy and learning rate per epoch, train and val, for one run or
several overlaid. Writes the run directory's ``curves.png`` and serves ``keras-resnet plot``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from keras_resnet.training.config import default_file_mode
from keras_resnet.training.rundir import read_history

PANELS = (("loss", "loss"), ("accuracy", "accuracy"), ("learning_rate", "learning rate"))


def history_path(source) -> Path:
    """A run directory or a ``history.csv`` -> the ``history.csv``; one-line errors."""
    path = Path(source)
    if path.is_dir():
        path = path / "history.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no history.csv at {source}")
    return path


def load_histories(sources) -> list[tuple[str, list[dict]]]:
    runs = []
    for source in sources:
        path = history_path(source)
        rows = read_history(path)
        if not rows:
            raise ValueError(f"{path} has no epochs yet")
        label = path.parent.name if path.name == "history.csv" else path.stem
        runs.append((label, rows))
    return runs


def plot_curves(sources, output, labels=None, title=None) -> Path:
    """Plot the histories of ``sources`` (run directories or ``history.csv`` files) into
    ``output`` (any format matplotlib knows by its extension), atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    runs = load_histories(sources)
    if labels:
        if len(labels) != len(runs):
            raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
        runs = [(label, rows) for label, (_, rows) in zip(labels, runs)]
    panels = [(key, name) for key, name in PANELS
              if any(key in row or f"val_{key}" in row for _, rows in runs for row in rows)]
    if not panels:
        raise ValueError("the histories have no loss, accuracy or learning_rate columns")
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, rows) in enumerate(runs):
        colour = colours[index % len(colours)]
        epochs = [row["epoch"] + 1 for row in rows]
        for axis, (key, name) in zip(axes[0], panels):
            for prefix, style, suffix in (("", "-", "train"), ("val_", "--", "val")):
                column = f"{prefix}{key}"
                if key == "learning_rate" and prefix:
                    continue
                points = [(e, row[column]) for e, row in zip(epochs, rows) if column in row]
                if not points:
                    continue
                tag = label if key == "learning_rate" else f"{label} {suffix}"
                axis.plot(*zip(*points), style, color=colour, marker="o" if len(points) < 15
                          else None, markersize=3, label=tag if len(runs) > 1 or prefix
                          or key != "learning_rate" else None)
            axis.set_title(name)
            axis.set_xlabel("epoch")
            axis.grid(alpha=0.3)
    for axis, (key, _) in zip(axes[0], panels):
        if key == "loss":
            axis.set_yscale("log")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    suffix = output.suffix.lstrip(".") or "png"
    fd, tmp = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=f".{suffix}", dir=output.parent)
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=110, format=suffix)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, output)
    finally:
        plt.close(figure)
        if os.path.exists(tmp):
            os.remove(tmp)
    return output
