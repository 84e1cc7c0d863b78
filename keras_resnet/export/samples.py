"""Images for the parity gate and for int8 calibration, from the data layer.

A class-folder spec is sampled here, round-robin over the classes (a seeded shuffle within each),
with ``keras_resnet.data.list_image_files`` and ``read_image``: ``load_data`` reads in a fixed
class order, so its first N images could all be one class, which would make a poor calibration
set and a weak parity check. Split subfolders are honoured: parity prefers held-out images
(``test``, then ``val``), calibration prefers ``train``. Any other spec (``cifar10``, ``.npz``,
``tfds:...``, ``shapes``) goes through ``load_data`` and takes its first N images.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_FOLDERS = ("train", "val", "validation", "test")
PARITY_SPLITS = ("test", "val", "validation", "train")
CALIBRATION_SPLITS = ("train", "val", "validation", "test")
GENERATED_SPEC = "shapes:classes=8,train={count},val=0,size={size},seed=1234"


@dataclass
class Samples:
    images: np.ndarray            # float32 (N, H, W, 3), raw 0-255
    labels: np.ndarray | None     # int indices into the model's classes, or None
    description: dict             # what the manifest records about these images


def _class_folders(root: Path):
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _sample_folder(root: Path, image_size, limit: int, splits, seed: int):
    from keras_resnet.data import list_image_files, read_image

    present = [s for s in splits if (root / s).is_dir()]
    if present:
        root = root / present[0]
    folders = _class_folders(root)
    if folders:
        class_names = [f.name for f in folders]
        per_class = [list(list_image_files(f)) for f in folders]
    else:
        class_names, per_class = None, [list(list_image_files(root))]
    rng = np.random.default_rng(seed)
    for files in per_class:
        rng.shuffle(files)
    queue = []  # round-robin: one image of each class in turn
    for round_ in range(max(map(len, per_class), default=0)):
        queue.extend((index, files[round_]) for index, files in enumerate(per_class)
                     if round_ < len(files))
    images, labels, bad = [], [], []
    for index, file in queue:
        if len(images) == limit:
            break
        try:
            images.append(read_image(file, image_size=image_size))
        except ValueError as error:
            bad.append(str(error))
            continue
        labels.append(index)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) under {root}; first: {bad[0]}")
    return images, (labels if class_names else None), class_names, str(root)


def _sample_dataset(spec: str, image_size, limit: int, splits, seed: int, val_split=0.1):
    """The first ``limit`` images of the first split of ``splits`` that ``spec`` has.

    With the data layer's default ``val_split`` and seed, the ``val`` split of a dataset
    without one is the same held-out slice a training run on that spec validated on.
    """
    from keras_resnet.data import load_data

    data = load_data(spec, batch_size=min(limit, 64), image_size=image_size, seed=seed,
                     val_split=val_split, augment=None, cache=False)
    attributes = {"test": "test", "val": "val", "validation": "val", "train": "train"}
    dataset = next((getattr(data, attributes[s]) for s in splits
                    if getattr(data, attributes[s], None) is not None), None)
    if dataset is None:
        dataset = data.dataset("all")
    images, labels = [], []
    for batch_images, batch_labels in dataset:
        images.extend(np.asarray(batch_images))
        labels.extend(np.asarray(batch_labels).reshape(len(batch_images), -1).argmax(-1)
                      if np.ndim(batch_labels) == 2 else np.asarray(batch_labels))
        if len(images) >= limit:
            break
    return images[:limit], labels[:limit], list(data.class_names), spec


def _to_model_labels(labels, data_classes, model_classes):
    """Data labels as indices into the model's classes, or ``None`` if the classes differ."""
    if labels is None or data_classes is None:
        return None
    if list(data_classes) == list(model_classes):
        return np.asarray(labels, dtype=np.int64)
    position = {name: i for i, name in enumerate(model_classes)}
    if all(name in position for name in data_classes):
        return np.asarray([position[data_classes[i]] for i in labels], dtype=np.int64)
    return None


def load_samples(data, *, image_size, limit: int, class_names, purpose: str,
                 seed: int = 0) -> Samples:
    """Up to ``limit`` images at ``image_size`` from ``data``.

    ``data`` is a data spec (see ``keras_resnet.load_data``), an array of 0-255 NHWC images, an
    ``(images, labels)`` pair, or ``None`` for generated images (with a warning).
    ``purpose`` is ``"parity"`` or ``"calibration"`` and picks the preferred split.
    """
    if limit < 1:
        raise ValueError(f"the number of {purpose} images must be at least 1, got {limit}")
    splits = CALIBRATION_SPLITS if purpose == "calibration" else PARITY_SPLITS
    image_size = tuple(image_size)
    if data is None:
        warnings.warn(f"no --parity-data or --calibration-data given: the {purpose} images are "
                      f"generated shapes, not real images; pass a folder of real images for a "
                      f"meaningful check")
        spec = GENERATED_SPEC.format(count=max(limit, 8), size=image_size[0])
        images, _, _, _ = _sample_dataset(spec, image_size, limit, ("train",), seed,
                                          val_split=0.0)
        labels, data_classes, where = None, None, "generated"
    elif isinstance(data, (str, Path)):
        if Path(data).is_dir():
            images, labels, data_classes, where = _sample_folder(
                Path(data), image_size, limit, splits, seed)
        elif Path(data).suffix and not Path(data).exists() and ":" not in str(data):
            raise FileNotFoundError(f"no such {purpose} data: {data}")
        else:
            images, labels, data_classes, where = _sample_dataset(
                str(data), image_size, limit, splits, seed)
    else:
        if isinstance(data, tuple) and len(data) == 2:
            images, labels = data
            labels = None if labels is None else np.asarray(labels)[:limit]
        else:
            images, labels = data, None
        images = list(np.asarray(images)[:limit])
        data_classes, where = (list(class_names) if labels is not None else None), "array"
    if not images:
        raise ValueError(f"no readable {purpose} images in {data}")
    images = np.stack([np.asarray(image, dtype=np.float32) for image in images])
    if images.shape[1:] != (*image_size, 3):
        raise ValueError(f"{purpose} images have shape {images.shape[1:]}, the model takes "
                         f"{(*image_size, 3)}")
    model_labels = _to_model_labels(labels, data_classes, class_names)
    description = {"source": where, "num_images": int(len(images)),
                   "labelled": model_labels is not None}
    return Samples(images=images, labels=model_labels, description=description)
