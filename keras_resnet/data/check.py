"""``check_data``: what a data spec holds, before any training: classes, counts per class and
split, image sizes seen, bad files found."""
from __future__ import annotations

from collections import Counter

import numpy as np

from keras_resnet.data.sources import SPLITS, open_source


def _class_counts(labels, class_names) -> dict[str, int]:
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    return {name: int(counts[i]) for i, name in enumerate(class_names)}


def check_data(spec, strict=False, val_split=None) -> dict:
    """Scan ``spec`` (see ``load_data``) and report on it as a JSON-ready dict.

    Keys: ``classes`` (list), ``counts`` (class -> images over all splits), ``num_images``,
    ``bad_files`` (list of ``{"path", "reason"}``), ``splits`` (split -> ``num_images`` and
    ``counts``), ``image_sizes`` (``"HxW"`` -> images), ``empty_classes``, ``warnings``,
    ``source`` and ``spec``. ``val_split`` (a fraction) reports the train/val split
    ``load_data`` would make when the source has no validation split. ``strict``: raise
    ``ValueError`` naming the bad files instead of listing them.
    """
    from keras_resnet.data.pipeline import refuse_if_strict

    source = open_source(spec)
    refuse_if_strict(source, strict)
    split_labels = {name: split.labels for name, split in source.splits.items()}
    sizes = Counter()
    for split in source.splits.values():
        sizes.update(split.image_sizes())
    if val_split and "val" not in split_labels:
        from keras_resnet.data.pipeline import stratified_split

        train_idx, val_idx = stratified_split(split_labels["train"], float(val_split))
        labels = split_labels["train"]
        split_labels["train"], split_labels["val"] = labels[train_idx], labels[val_idx]
    names = source.class_names
    splits = {name: {"num_images": int(len(split_labels[name])),
                     "counts": _class_counts(split_labels[name], names)}
              for name in SPLITS if name in split_labels}
    all_labels = np.concatenate([split_labels[s] for s in splits]) if splits else []
    return {
        "spec": str(spec),
        "source": source.kind,
        "classes": list(names),
        "num_classes": len(names),
        "counts": _class_counts(all_labels, names),
        "num_images": int(len(all_labels)),
        "splits": splits,
        "image_sizes": {f"{h}x{w}": int(n) for (h, w), n in sorted(
            sizes.items(), key=lambda item: (-item[1], item[0]))},
        "bad_files": [{"path": path, "reason": reason} for path, reason in source.bad_files],
        "num_bad_files": len(source.bad_files),
        "empty_classes": list(source.empty_classes),
        "warnings": list(source.warnings),
    }
