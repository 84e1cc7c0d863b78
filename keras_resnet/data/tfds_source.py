"""``tfds:NAME``: TensorFlow Datasets image classification, downloaded once into the TFDS data
dir (``TFDS_DATA_DIR``, default ``~/tensorflow_datasets``).

Images are read still encoded (``SkipDecoding``), so they go through the same decode, resize,
cache and augmentation steps as image files. Before a download, the dataset's download hosts
are probed with a short timeout: TFDS itself retries a missing network for minutes, this fails
in a second with one line naming the offline alternatives.
"""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import numpy as np

from keras_resnet.data.sources import OFFLINE_ALTERNATIVES, Source, Split

# TFDS split name -> ours
SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}
NETWORK_TIMEOUT_S = 5
TYPICAL_ENCODED_BYTES = 100_000   # per image, when TFDS gives no size


def _one_line(error) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def check_network(builder, name):
    """Raise ``ValueError`` at once when none of the dataset's download hosts is reachable."""
    hosts = []
    for url in (getattr(builder, "url_infos", None) or {}):
        parsed = urlparse(url)
        if parsed.hostname and (parsed.hostname, parsed.port) not in hosts:
            hosts.append((parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443)))
    last_error = None
    for host, port in hosts[:3]:
        try:
            socket.create_connection((host, port), timeout=NETWORK_TIMEOUT_S).close()
            return
        except OSError as error:
            last_error = error
    if last_error is not None:
        raise ValueError(f"cannot download TFDS dataset {name!r}: {hosts[0][0]} is unreachable "
                         f"({_one_line(last_error)}); offline, use {OFFLINE_ALTERNATIVES}")


def tfds_source(name: str, data_dir=None) -> Source:
    """Prepare (download once) and open ``name`` (``cifar10``, ``imagenette/320px`` ...)."""
    name = name.strip()
    if not name:
        raise ValueError("tfds: needs a dataset name, e.g. tfds:cifar10")
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ValueError(f"tfds:{name} needs TensorFlow Datasets (pip install "
                         f"tensorflow-datasets); offline, use {OFFLINE_ALTERNATIVES}") from None
    # TFDS reads TFDS_DATA_DIR once, at import; read it here so a later setting counts.
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:   # DatasetNotFoundError and friends
        raise ValueError(f"unknown TFDS dataset {name!r}: {_one_line(error)}") from None
    if not builder.is_prepared():
        check_network(builder, name)
        try:
            builder.download_and_prepare()
        except Exception as error:
            raise ValueError(f"cannot download TFDS dataset {name!r}: {_one_line(error)}; "
                             f"offline, use {OFFLINE_ALTERNATIVES}") from None

    info = builder.info
    image_key, label_key = info.supervised_keys or ("image", "label")
    features = info.features
    if image_key not in features or label_key not in features or not hasattr(
            features[label_key], "names"):
        raise ValueError(f"TFDS dataset {name!r} is not image classification "
                         "(no image feature with a class label)")
    class_names = [str(n) for n in features[label_key].names]
    shape = tuple(features[image_key].shape)
    native = shape[:2] if None not in shape[:2] else None
    available = list(info.splits.keys()) if info.splits else []
    source = Source("tfds", f"tfds:{name}", class_names, native_shape=native)
    for tfds_split, ours in SPLIT_NAMES.items():
        if available and tfds_split not in available:
            continue
        try:
            stream = builder.as_dataset(
                split=tfds_split, shuffle_files=False,
                decoders={image_key: tfds.decode.SkipDecoding()})
        except Exception:
            if tfds_split == "train":
                raise
            continue
        source.splits[ours] = _stream_split(stream, image_key, label_key, native)
    if "train" not in source.splits:
        raise ValueError(f"TFDS dataset {name!r} has no train split")
    return source


def _stream_split(stream, image_key, label_key, native) -> Split:
    import tensorflow as tf

    pairs = stream.map(lambda example: (example[image_key],
                                        tf.cast(example[label_key], tf.int32)),
                       num_parallel_calls=tf.data.AUTOTUNE)
    labels = np.concatenate([batch for batch in pairs.map(lambda _, label: label)
                             .batch(8192).as_numpy_iterator()] or [np.zeros(0, np.int32)])
    size = len(labels)
    return Split(labels.astype(np.int32), stream=pairs,
                 sizes=[tuple(native)] * size if native else None,
                 file_bytes=size * TYPICAL_ENCODED_BYTES if not native
                 else size * native[0] * native[1])
