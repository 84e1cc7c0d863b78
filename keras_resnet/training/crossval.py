"""Stratified K-fold cross-validation over the examples of a training split.

scikit-learn's ``StratifiedKFold`` picks the indices; the data layer turns each pair of index
sets into train and validation pipelines (``ImageData.fold``), so a fold is augmented and
batched exactly like an ordinary run.
"""
from __future__ import annotations

from collections import Counter

import numpy as np


def stratified_folds(labels, folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` pairs of sorted index arrays ``(train, val)``: every example is in exactly one
    ``val``, and each class is spread over the folds as evenly as its count allows."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an integer of at least 2, got {folds!r}")
    counts = Counter(labels.tolist())
    smallest, count = min(counts.items(), key=lambda item: item[1])
    if count < folds:
        raise ValueError(f"{folds}-fold cross-validation needs at least {folds} training "
                         f"examples of every class; class {smallest} has {count}")
    splitter = StratifiedKFold(n_splits=int(folds), shuffle=True, random_state=int(seed))
    return [(np.sort(train), np.sort(val))
            for train, val in splitter.split(np.zeros(len(labels)), labels)]


def summarise(scores) -> tuple[float, float]:
    """Mean and (population) standard deviation of the per-fold scores."""
    scores = np.asarray(scores, dtype=np.float64)
    return float(scores.mean()), float(scores.std())
