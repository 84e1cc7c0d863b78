"""``evaluate`` and ``predict``: the Python API behind ``keras-resnet evaluate`` and ``predict``.

Every model goes through ``keras_resnet.export.load_artifact``, so a ``.keras`` file, a run
directory and each exported format take the same path. Labelled images come from
``keras_resnet.data.load_data``; single images from ``keras_resnet.data.read_image``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keras_resnet.evaluation.ensemble import (column_order, ensemble_mean, label_mapping,
                                              predict_with_tta, tta_views)
from keras_resnet.evaluation.metrics import classification_metrics, top_k
from keras_resnet.evaluation.plots import plot_confusion_matrix
from keras_resnet.evaluation.report import write_report

SPLITS = ("val", "test", "train", "all")


# --------------------------------------------------------------------------- models

def _as_list(models):
    if isinstance(models, (str, os.PathLike)) or hasattr(models, "predict"):
        return [models]
    models = list(models)
    if not models:
        raise ValueError("give at least one model to evaluate")
    return models


def load_predictor(model):
    """A ``Predictor`` for a path (any format ``load_artifact`` reads) or a ready predictor."""
    if hasattr(model, "predict") and hasattr(model, "class_names"):
        return model
    from keras_resnet.export import load_artifact

    return load_artifact(model)


def _model_name(model, predictor) -> str:
    return str(model) if isinstance(model, (str, os.PathLike)) else str(
        getattr(predictor, "path", type(predictor).__name__))


def _image_size(predictor):
    """(H, W) the predictor needs, or ``None`` when it takes any size."""
    shape = tuple(getattr(predictor, "input_shape", None) or ())
    if len(shape) >= 2 and all(isinstance(d, (int, np.integer)) and d > 0 for d in shape[:2]):
        return int(shape[0]), int(shape[1])
    return None


# --------------------------------------------------------------------------- labelled data

@dataclass
class Labelled:
    """Labelled images to evaluate on, yielded batch by batch at a requested image size."""

    source: object
    split: str
    batch_size: int
    val_split: float = 0.1
    seed: int = 0
    strict: bool = False
    description: str = ""
    class_names: list | None = None
    bad_files: list = field(default_factory=list)

    def batches(self, image_size):
        """Yield ``(images, labels)`` NumPy batches; images 0-255 NHWC at ``image_size``."""
        source = self.source
        if isinstance(source, (str, os.PathLike)):
            from keras_resnet.data import load_data

            # 'all' needs no validation share carved out: every image comes in source order.
            val_split = 0.0 if self.split == "all" else self.val_split
            source = load_data(str(source), batch_size=self.batch_size, image_size=image_size,
                               val_split=val_split, seed=self.seed, augment=None,
                               strict=self.strict, cache=False)
            self.bad_files = list(getattr(source, "bad_files", []) or [])
        if hasattr(source, "dataset"):
            self.class_names = list(source.class_names)
            yield from self._dataset_batches(source, image_size)
        elif isinstance(source, (tuple, list)) and len(source) in (2, 3):
            images, labels = np.asarray(source[0]), np.asarray(source[1])
            if len(source) == 3:
                self.class_names = [str(c) for c in source[2]]
            if len(images) != len(labels):
                raise ValueError(f"{len(images)} images but {len(labels)} labels")
            self._check_size(images.shape[1:3], image_size)
            for start in range(0, len(images), self.batch_size):
                yield images[start:start + self.batch_size], labels[start:start + self.batch_size]
        else:
            raise ValueError("data must be a dataset spec, an ImageData, or (images, labels"
                             "[, class_names]) arrays")

    def _dataset_batches(self, data, image_size):
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; choose from {', '.join(SPLITS)}")
        available = [s for s in ("train", "val", "test") if getattr(data, s, None) is not None]
        dataset = data.dataset(self.split) if self.split in available + ["all"] else None
        if dataset is None:
            raise ValueError(f"{self.description or 'the data'} has no {self.split} split "
                             f"(it has {', '.join(available) or 'none'}; --split all takes "
                             "every image)")
        shape = tuple(getattr(data, "image_shape", ()) or ())[:2]
        self._check_size(shape, image_size)
        for images, labels in dataset.as_numpy_iterator():
            yield images, labels

    @staticmethod
    def _check_size(shape, image_size):
        if image_size is not None and shape and tuple(shape) != tuple(image_size):
            raise ValueError(f"the model takes {image_size[0]}x{image_size[1]} images but the "
                             f"data gives {shape[0]}x{shape[1]}; pass a dataset spec so the "
                             "images are resized on loading")


# --------------------------------------------------------------------------- evaluation

@dataclass
class Predictions:
    """What the models said about labelled data, in one class order (``class_names``)."""

    class_names: list
    labels: np.ndarray                    # (N,) indices into class_names
    probabilities: dict                   # model name -> (N, C) probabilities
    data_class_names: list | None = None
    notes: list = field(default_factory=list)
    formats: dict = field(default_factory=dict)

    @property
    def ensemble(self) -> np.ndarray:
        return ensemble_mean(list(self.probabilities.values()))


def predict_data(models, data, split: str = "val", tta=None, *, batch_size: int = 64,
                 val_split: float = 0.1, seed: int = 0, strict: bool = False) -> Predictions:
    """Run every model over the labelled ``data`` (see ``evaluate``) and line the classes up."""
    tta_views(tta)  # validate early, before any model loads
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    models = _as_list(models)
    predictors = [load_predictor(m) for m in models]
    names = _unique([_model_name(m, p) for m, p in zip(models, predictors)])

    labelled = Labelled(data, split, batch_size, val_split, seed, strict,
                        description=str(data) if isinstance(data, (str, os.PathLike)) else "")
    by_size = {}
    for name, predictor in zip(names, predictors):
        by_size.setdefault(_image_size(predictor), []).append((name, predictor))

    outputs, labels = {}, None
    for image_size, group in by_size.items():
        chunks = {name: [] for name, _ in group}
        group_labels = []
        for images, batch_labels in labelled.batches(image_size):
            group_labels.append(np.asarray(batch_labels))
            for name, predictor in group:
                chunks[name].append(predict_with_tta(predictor, images, tta, batch_size))
        if not group_labels:
            raise ValueError(f"nothing to evaluate: the {split!r} split of "
                             f"{labelled.description or 'the data'} has no images")
        group_labels = np.concatenate(group_labels)
        if group_labels.ndim == 2:
            group_labels = group_labels.argmax(axis=1)
        if labels is not None and not np.array_equal(labels, group_labels):
            raise ValueError("the data came out in a different order for models of different "
                             "input sizes; evaluate them separately")
        labels = group_labels
        outputs.update({name: np.concatenate(chunks[name]) for name in chunks})

    notes = []
    data_classes = labelled.class_names
    reference = next((p.class_names for p in predictors if p.class_names), None)
    if reference is None:
        if data_classes is None:
            raise ValueError("neither the model nor the data names the classes")
        reference = list(data_classes)
        notes.append("the model has no saved class names; assumed the data's class order")
    reference = [str(c) for c in reference]

    probabilities, formats = {}, {}
    for name, predictor in zip(names, predictors):
        width = outputs[name].shape[1]
        if predictor.class_names:
            order = column_order(predictor.class_names, reference, name)
        elif width == len(reference):
            order = list(range(width))
        else:
            raise ValueError(f"{name} outputs {width} classes but {len(reference)} are expected")
        probabilities[name] = outputs[name][:, order]
        formats[name] = getattr(predictor, "format", "unknown")

    if data_classes is not None:
        data_classes = [str(c) for c in data_classes]
        mapping = label_mapping(data_classes, reference, data_name=labelled.description or
                                "the data", model_name=names[0])
        labels = mapping[labels.astype(np.int64)]
        if data_classes != reference:
            if len(data_classes) < len(reference):
                notes.append(f"the data holds {len(data_classes)} of the model's "
                             f"{len(reference)} classes; the others have support 0")
            else:
                notes.append("the data lists the classes in another order than the model; "
                             "labels were matched by class name")
    if labelled.bad_files:
        notes.append(f"{len(labelled.bad_files)} unreadable file(s) were skipped, e.g. "
                     f"{labelled.bad_files[0][0]}: {labelled.bad_files[0][1]}")
    return Predictions(reference, labels.astype(np.int64), probabilities, data_classes, notes,
                       formats)


def evaluate(models, data, split: str = "val", tta=None, *, batch_size: int = 64,
             output=None, confusion_png=None, val_split: float = 0.1, seed: int = 0,
             strict: bool = False) -> dict:
    """Evaluate one model, or several and their ensemble (mean of probabilities).

    ``models``: a path (``.keras`` file, run directory, exported artifact), a ``Predictor``, or a
    list of them. ``data``: a dataset spec for ``keras_resnet.data.load_data`` (images are
    resized to each model's input size), an ``ImageData``, or ``(images, labels[, class_names])``
    arrays. ``split``: ``val``, ``test``, ``train`` or ``all`` (every image of the source).
    ``tta``: ``None``, ``"flip"`` (average of the image and its mirror) or ``"flip-translate"``
    (also the mirror pairs of the image shifted one pixel each way; airbench's TTA).

    Returns the report dict: ``accuracy``, ``top5_accuracy``, ``loss``, ``macro_f1``,
    ``weighted_f1``, ``per_class``, ``confusion_matrix``, ``classes``, ``num_images``, with the
    ensemble's figures at the top and each model's under ``models`` when there are several.
    ``output`` writes it as JSON; the confusion matrix PNG goes to ``confusion_png``, by default
    next to ``output`` (``report.json`` -> ``report_confusion.png``).
    """
    predictions = predict_data(models, data, split, tta, batch_size=batch_size,
                               val_split=val_split, seed=seed, strict=strict)
    classes = predictions.class_names
    members = []
    for name, probabilities in predictions.probabilities.items():
        figures = classification_metrics(predictions.labels, probabilities, classes)
        members.append({"model": name, "format": predictions.formats[name], **figures})

    if len(members) == 1:
        report = dict(members[0])
    else:
        report = {"model": f"ensemble of {len(members)} models",
                  **classification_metrics(predictions.labels, predictions.ensemble, classes),
                  "models": members}
    report.update({"data": str(data) if isinstance(data, (str, os.PathLike))
                   else getattr(data, "spec", None),
                   "split": split, "tta": None if tta in (None, "", "none") else str(tta),
                   "notes": predictions.notes})

    if output is not None and confusion_png is None:
        output = Path(output)
        confusion_png = output.with_name(f"{output.stem}_confusion.png")
    if confusion_png is not None:
        title = f"{Path(str(report['model'])).name}: top-1 {100 * report['accuracy']:.2f}% " \
                f"on {report['num_images']} images"
        report["confusion_matrix_png"] = str(plot_confusion_matrix(
            report["confusion_matrix"], classes, confusion_png, title=title))
    if output is not None:
        write_report(report, output)
    return report


def _unique(names):
    """Model names made unique (``a.keras``, ``a.keras#2``) so reports never merge two models."""
    seen, unique = {}, []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


# --------------------------------------------------------------------------- predict

def expand_paths(paths) -> list[tuple[str, str | None]]:
    """``(path, error)`` for every image in ``paths`` (files, and folders through
    ``list_image_files``), in the order given; ``error`` is ``None`` for a file to read and a
    reason for a path that does not exist or a folder without images."""
    from keras_resnet.data import list_image_files

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    entries = []
    for path in map(Path, paths):
        if path.is_dir():
            found = [str(f) for f in list_image_files(path)]
            entries.extend((f, None) for f in found)
            if not found:
                entries.append((str(path), "folder holds no images"))
        elif path.exists():
            entries.append((str(path), None))
        else:
            entries.append((str(path), "no such file or folder"))
    return entries


def predict(model, paths, top_k: int = 5, *, tta=None, batch_size: int = 64) -> list[dict]:
    """Top-``top_k`` classes and probabilities for each image in ``paths`` (files or folders).

    Returns one dict per image, in order: ``{"path", "predictions": [{"class", "probability"},
    ...]}`` most likely first, or ``{"path", "error"}`` for a path that could not be read (the
    others go on). Images are read, resized to the model's input and predicted ``batch_size`` at
    a time, so a large folder never sits in memory whole.
    """
    if int(top_k) < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    tta_views(tta)
    predictor = load_predictor(model)
    entries = expand_paths(paths)
    results = []
    for start in range(0, len(entries), batch_size):
        results.extend(_predict_chunk(predictor, entries[start:start + batch_size], top_k, tta,
                                      batch_size))
    return results


def _predict_chunk(predictor, entries, k, tta, batch_size):
    from keras_resnet.data import read_image

    image_size = _image_size(predictor)
    results = [{"path": path, "error": error} if error else None for path, error in entries]
    images = {}
    for position, (path, error) in enumerate(entries):
        if error is None:
            try:
                images[position] = read_image(path, image_size=image_size)
            except (ValueError, OSError) as exc:
                results[position] = {"path": path, "error": _one_line(exc)}

    by_shape = {}  # a model that takes any size gets one batch per image size
    for position, image in images.items():
        by_shape.setdefault(image.shape, []).append(position)
    for positions in by_shape.values():
        probabilities = predict_with_tta(predictor, np.stack([images[p] for p in positions]),
                                         tta, batch_size)
        class_names = predictor.class_names or [
            f"class_{i}" for i in range(probabilities.shape[1])]
        indices, values = top_k(probabilities, k)
        for position, row_indices, row_values in zip(positions, indices, values):
            results[position] = {"path": entries[position][0], "predictions": [
                {"class": str(class_names[i]), "probability": float(v)}
                for i, v in zip(row_indices, row_values)]}
    return results


def _one_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
