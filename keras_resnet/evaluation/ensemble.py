"""Test-time augmentation, ensembles, and lining up class orders between models and data.

An ensemble's prediction is the mean of its members' probabilities; test-time augmentation
averages one model's probabilities over transformed copies of each image. Both are plain means,
so an ensemble of a model with itself, or TTA with only the identity view, gives the model back.
"""
from __future__ import annotations

import numpy as np


def _mirror(images):
    return images[:, :, ::-1, :]


def _translate(images, dy, dx):
    """Shift by ``(dy, dx)`` pixels (at most 1), reflecting at the borders."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    height, width = images.shape[1:3]
    return padded[:, 1 - dy:1 - dy + height, 1 - dx:1 - dx + width, :]


# TTA name -> (view, weight) pairs: the views (functions of an NHWC batch) whose probabilities
# are averaged with those weights. "flip-translate" is airbench's (Jordan 2024): the flip pair
# at weight 1/2, and the flip pairs of the image moved one pixel down-right and up-left at 1/4.
TTA_VIEWS = {
    "none": ((lambda images: images, 1.0),),
    "flip": ((lambda images: images, 0.5), (_mirror, 0.5)),
    "flip-translate": (
        (lambda images: images, 0.25), (_mirror, 0.25),
        (lambda images: _translate(images, 1, 1), 0.125),
        (lambda images: _mirror(_translate(images, 1, 1)), 0.125),
        (lambda images: _translate(images, -1, -1), 0.125),
        (lambda images: _mirror(_translate(images, -1, -1)), 0.125),
    ),
}


def tta_names():
    return sorted(TTA_VIEWS)


def tta_views(tta):
    """The ``(view, weight)`` pairs of a TTA mode (``None`` means no augmentation)."""
    name = "none" if tta in (None, "") else str(tta).lower()
    if name not in TTA_VIEWS:
        raise ValueError(f"unknown test-time augmentation {tta!r}; choose from "
                         f"{', '.join(tta_names())}")
    return TTA_VIEWS[name]


def predict_with_tta(predictor, images, tta=None, batch_size: int = 64) -> np.ndarray:
    """``predictor``'s probabilities for ``images`` (0-255 NHWC), averaged over the TTA views."""
    images = np.asarray(images)
    views = tta_views(tta)
    total = 0.0
    for view, weight in views:
        probabilities = np.asarray(
            predictor.predict(np.ascontiguousarray(view(images)), batch_size=batch_size),
            dtype=np.float64)
        total = total + weight * probabilities
    return total


def ensemble_mean(probabilities) -> np.ndarray:
    """The mean of several models' probabilities, each (N, C) in the same class order."""
    stacked = [np.asarray(p, dtype=np.float64) for p in probabilities]
    if not stacked:
        raise ValueError("an ensemble needs at least one model")
    shapes = {p.shape for p in stacked}
    if len(shapes) != 1:
        raise ValueError(f"ensemble members disagree on shape: {sorted(shapes)}")
    return np.mean(stacked, axis=0)


def column_order(model_classes, reference_classes, model_name="model"):
    """Indices that reorder ``model_classes`` into ``reference_classes`` order.

    Raises ``ValueError`` naming the classes that differ when the two are not the same set.
    """
    model_classes = [str(c) for c in model_classes]
    reference_classes = [str(c) for c in reference_classes]
    if sorted(model_classes) != sorted(reference_classes):
        missing = sorted(set(reference_classes) - set(model_classes))
        extra = sorted(set(model_classes) - set(reference_classes))
        raise ValueError(f"{model_name} has different classes from the others: "
                         f"missing {missing or 'none'}, extra {extra or 'none'}")
    position = {name: i for i, name in enumerate(model_classes)}
    return [position[name] for name in reference_classes]


def label_mapping(data_classes, model_classes, data_name="the data", model_name="the model"):
    """An array mapping each data label index to the model's output index for the same class name.

    The data may hold a subset of the model's classes (a held-out folder missing some); a data
    class the model does not know is an error that names it.
    """
    data_classes = [str(c) for c in data_classes]
    model_classes = [str(c) for c in model_classes]
    unknown = [name for name in data_classes if name not in model_classes]
    if unknown:
        raise ValueError(f"class names do not match: {data_name} has {len(unknown)} class(es) "
                         f"that {model_name} does not know ({_shorten(unknown)}); "
                         f"{model_name} knows {_shorten(model_classes)}")
    position = {name: i for i, name in enumerate(model_classes)}
    return np.array([position[name] for name in data_classes], dtype=np.int64)


def _shorten(names, limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")
