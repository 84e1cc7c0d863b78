"""Test-time augmentation, ensembles, and lining up class orders between models and data.

An ensemble's prediction is the mean of its members' probabilities; test-time augmentation
averages one model's probabilities over transformed copies of each image. Both are plain means,
so an ensemble of a model with itself, or TTA with only the identity view, gives the model back.
"""
from __future__ import annotations

import numpy as np

# TTA name -> the views averaged (functions of an NHWC batch)
TTA_VIEWS = {
    "none": (lambda images: images,),
    "flip": (lambda images: images, lambda images: images[:, :, ::-1, :]),
}


def tta_names():
    return sorted(TTA_VIEWS)


def tta_views(tta):
    """The views of a TTA mode (``None`` means no augmentation)."""
    name = "none" if tta in (None, "") else str(tta).lower()
    if name not in TTA_VIEWS:
        raise ValueError(f"unknown test-time augmentation {tta!r}; choose from "
                         f"{', '.join(tta_names())}")
    return TTA_VIEWS[name]


def predict_with_tta(predictor, images, tta=None, batch_size: int = 64) -> np.ndarray:
    """``predictor``'s probabilities for ``images`` (0-255 NHWC), averaged over the TTA views."""
    images = np.asarray(images)
    views = tta_views(tta)
    total = None
    for view in views:
        probabilities = np.asarray(
            predictor.predict(np.ascontiguousarray(view(images)), batch_size=batch_size),
            dtype=np.float64)
        total = probabilities if total is None else total + probabilities
    return total / len(views)


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
