"""The confusion matrix as a PNG heatmap with class names (matplotlib, Agg backend).

Cells are coloured by the row-normalised rate (the share of each true class that went to each
prediction, so rare and common classes read alike) and annotated with the raw counts. The figure
has a fixed size in pixels for a given number of classes (``figure_pixels``), never cropped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_resnet.evaluation.io import atomic_path

DPI = 100
ANNOTATE_UP_TO = 30  # classes; beyond this the counts would not fit in the cells


def figure_inches(num_classes: int) -> tuple[float, float]:
    """Width and height in inches: room for the class names plus about 0.45 inch a class."""
    side = min(max(5.0, 2.5 + 0.45 * num_classes), 40.0)
    return side + 1.0, side  # the extra inch holds the colour bar


def figure_pixels(num_classes: int, dpi: int = DPI) -> tuple[int, int]:
    """(width, height) in pixels of the PNG ``plot_confusion_matrix`` writes."""
    width, height = figure_inches(num_classes)
    return int(round(width * dpi)), int(round(height * dpi))


def plot_confusion_matrix(matrix, class_names, path, *, title: str | None = None,
                          dpi: int = DPI) -> Path:
    """Write the heatmap of ``matrix`` (rows: true class, columns: predicted) to ``path``."""
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix, dtype=np.int64)
    num_classes = len(class_names)
    if matrix.shape != (num_classes, num_classes):
        raise ValueError(f"confusion matrix of shape {matrix.shape} for {num_classes} classes")
    row_totals = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, row_totals, out=np.zeros(matrix.shape, float), where=row_totals > 0)

    # Figure() rather than pyplot: no global state and no GUI; savefig renders PNG with Agg.
    figure = Figure(figsize=figure_inches(num_classes), dpi=dpi)
    axes = figure.add_subplot()
    image = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = np.arange(num_classes)
    font_size = max(5, min(10, int(220 / max(num_classes, 1))))
    axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right", fontsize=font_size)
    axes.set_yticks(ticks, labels=class_names, fontsize=font_size)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title or "Confusion matrix")
    if num_classes <= ANNOTATE_UP_TO:
        for i in range(num_classes):
            for j in range(num_classes):
                if matrix[i, j]:
                    axes.text(j, i, str(matrix[i, j]), ha="center", va="center",
                              fontsize=font_size, color="white" if rates[i, j] > 0.5 else "black")
    figure.tight_layout()  # rearranges inside the canvas; the pixel size stays as computed

    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path
