"""One prediction interface over every model format.

``load_artifact(path)`` returns a ``Predictor``: ``predict(images)`` takes raw 0-255 pixels,
NHWC, and returns class probabilities as a NumPy array. ``evaluate`` and ``predict`` go through
this, so they accept any format the package can write.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class Predictor:
    """Base class: subclasses set ``format`` and implement ``_predict_batch``."""

    format = "unknown"
    provider = "cpu"

    def __init__(self, path, class_names=None, input_shape=None):
        self.path = Path(path)
        self.class_names = list(class_names) if class_names else None
        self.input_shape = tuple(input_shape) if input_shape else None

    def _predict_batch(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, images, batch_size: int = 64) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        outputs = [self._predict_batch(images[i:i + batch_size])
                   for i in range(0, len(images), batch_size)]
        return np.concatenate(outputs, axis=0) if outputs else np.zeros((0, 0), np.float32)

    def __repr__(self):
        return f"{type(self).__name__}({str(self.path)!r}, format={self.format!r})"


class KerasPredictor(Predictor):
    format = "keras"

    def __init__(self, path):
        from keras_resnet.models import load_model, read_metadata

        path = Path(path)
        self.model = load_model(path)
        model_file = path if path.suffix == ".keras" else (
            path / "best.keras" if (path / "best.keras").is_file() else path / "model.keras")
        metadata = read_metadata(model_file)
        super().__init__(model_file, metadata.get("class_names"), self.model.input_shape[1:])

    def _predict_batch(self, images):
        return np.asarray(self.model(images, training=False), dtype=np.float32)


def load_artifact(path) -> Predictor:
    """A ``Predictor`` for a ``.keras`` file or a run directory (more formats: see export)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model or artifact: {path}")
    if path.suffix == ".keras" or (path.is_dir() and any(
            (path / n).is_file() for n in ("best.keras", "model.keras"))):
        return KerasPredictor(path)
    raise ValueError(f"not a model this package can load: {path}")
