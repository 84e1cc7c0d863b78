"""Classification figures from labels and predicted probabilities.

Everything here is computed by scikit-learn (classification report, confusion matrix, top-k
accuracy) and Keras (cross-entropy); this module only validates the inputs and gathers the
results into the report's shape.
"""
from __future__ import annotations

import numpy as np

TOP_K = 5  # top-5 accuracy is reported when there are at least this many classes


def validate(labels, probabilities, class_names):
    """Labels as int64 (N,), probabilities as float64 (N, C); a clear error if they disagree."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.ndim == 2:  # one-hot
        labels = labels.argmax(axis=1)
    labels = labels.astype(np.int64).reshape(-1)
    if probabilities.ndim != 2:
        raise ValueError("probabilities must be (images, classes), got shape "
                         f"{probabilities.shape}")
    if len(labels) != len(probabilities):
        raise ValueError(f"{len(labels)} labels but {len(probabilities)} predictions")
    if len(labels) == 0:
        raise ValueError("nothing to evaluate: the data has no images")
    num_classes = probabilities.shape[1]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names but the model outputs {num_classes} "
                         "classes")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {labels.min()}.."
                         f"{labels.max()}")
    return labels, probabilities


def cross_entropy(labels, probabilities) -> float:
    """Mean categorical cross-entropy of the probabilities (Keras' loss, clipped like training)."""
    import keras

    per_image = keras.losses.sparse_categorical_crossentropy(
        np.asarray(labels, np.int32), np.asarray(probabilities, np.float32))
    return float(np.mean(keras.ops.convert_to_numpy(per_image)))


def classification_metrics(labels, probabilities, class_names) -> dict:
    """The report's figures: ``accuracy``, ``top5_accuracy`` (``None`` under 5 classes), ``loss``,
    ``macro_f1``, ``weighted_f1``, ``per_class``, ``confusion_matrix``, ``classes``,
    ``num_images``, plus the macro and weighted precision and recall.

    ``per_class`` and the confusion matrix cover every class the model knows, in its order,
    including classes with no image in the data (support 0).
    """
    from sklearn.metrics import (accuracy_score, classification_report, confusion_matrix,
                                 top_k_accuracy_score)

    class_names = [str(name) for name in class_names]
    labels, probabilities = validate(labels, probabilities, class_names)
    indices = np.arange(len(class_names))
    predicted = probabilities.argmax(axis=1)
    report = classification_report(labels, predicted, labels=indices, target_names=class_names,
                                   output_dict=True, zero_division=0)
    top5 = (top_k_accuracy_score(labels, probabilities, k=TOP_K, labels=indices)
            if len(class_names) >= TOP_K else None)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "top5_accuracy": None if top5 is None else float(top5),
        "loss": cross_entropy(labels, probabilities),
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "weighted_f1": float(report["weighted avg"]["f1-score"]),
        "macro_precision": float(report["macro avg"]["precision"]),
        "macro_recall": float(report["macro avg"]["recall"]),
        "weighted_precision": float(report["weighted avg"]["precision"]),
        "weighted_recall": float(report["weighted avg"]["recall"]),
        "per_class": {
            name: {"precision": float(report[name]["precision"]),
                   "recall": float(report[name]["recall"]),
                   "f1": float(report[name]["f1-score"]),
                   "support": int(report[name]["support"])}
            for name in class_names},
        "confusion_matrix": confusion_matrix(labels, predicted, labels=indices).tolist(),
        "classes": class_names,
        "num_images": int(len(labels)),
    }


def top_k(probabilities, k: int):
    """Indices and probabilities of the ``k`` most likely classes per row, most likely first."""
    probabilities = np.asarray(probabilities)
    k = max(1, min(int(k), probabilities.shape[1]))
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probabilities, order, axis=1)
