"""Where images come from: one ``Source`` per data spec, before any ``tf.data`` work.

A source knows its class names, and for each split either a list of image files (with the
result of the bad-file scan) or in-memory uint8 arrays, or a TFDS stream. Everything here is
NumPy and Pillow; TensorFlow is imported only for ``tfds:`` specs.
"""
from __future__ import annotations

import os
import pickle
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from keras_resnet.data import shapes as shapes_module

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Pillow format names the pipeline decodes (MPO: multi-picture JPEGs written by cameras).
DECODABLE_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "GIF"}
# Split folder names, first match wins; ``train`` must exist for a folder to count as split.
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}
SPLITS = ("train", "val", "test")
THREADED_SCAN_MIN_BYTES = 32_000
OFFLINE_ALTERNATIVES = ("a folder of class subfolders of images, an .npz file with x and y, a "
                        "local cifar-10-batches-py folder, or the built-in 'shapes' dataset")


@dataclass
class Split:
    """One split: image ``files`` (with per-file ``pil_decode`` flags), in-memory ``images``,
    or a ``stream`` (``tf.data.Dataset`` of encoded image bytes and int32 labels, in order)."""

    labels: np.ndarray
    files: list[str] | None = None
    pil_decode: np.ndarray | None = None      # files TensorFlow cannot decode faithfully
    images: np.ndarray | None = None
    stream: object = None
    sizes: list[tuple[int, int]] | None = None  # (height, width) of each image
    file_bytes: int = 0

    def __len__(self):
        return len(self.labels)

    def subset(self, indices) -> "Split":
        indices = np.asarray(indices, dtype=np.int64)
        return Split(
            labels=self.labels[indices],
            files=None if self.files is None else [self.files[i] for i in indices],
            pil_decode=None if self.pil_decode is None else self.pil_decode[indices],
            images=None if self.images is None else self.images[indices],
            stream=None if self.stream is None else _stream_subset(self.stream, indices,
                                                                     len(self)),
            sizes=None if self.sizes is None else [self.sizes[i] for i in indices],
            file_bytes=int(self.file_bytes * len(indices) / max(1, len(self))),
        )

    def image_sizes(self) -> Counter:
        if self.images is not None:
            return Counter({tuple(self.images.shape[1:3]): len(self.images)})
        return Counter(self.sizes or [])

    def decoded_bytes(self) -> int:
        """Bytes the decoded uint8 images take in memory."""
        if self.images is not None:
            return int(self.images.nbytes)
        return int(sum(h * w * 3 for h, w in self.sizes or []))


def _stream_subset(stream, indices, length):
    """The elements of ``stream`` at ``indices`` (sorted), keeping the stream's order."""
    import tensorflow as tf

    keep = np.zeros(length, bool)
    keep[indices] = True
    keep = tf.constant(keep)
    return (stream.enumerate()
            .filter(lambda i, element: tf.gather(keep, i))
            .map(lambda i, element: element))


@dataclass
class Source:
    kind: str
    location: str
    class_names: list[str]
    splits: dict[str, Split] = field(default_factory=dict)
    bad_files: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    native_shape: tuple | None = None   # (H, W) of every image when the source fixes it
    empty_classes: list[str] = field(default_factory=list)


# --- files -----------------------------------------------------------------------------------


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name.startswith("._")


def list_image_files(folder) -> list[Path]:
    """Image files (by extension, any case) under ``folder``, recursively, in sorted order.

    Hidden files and folders (``.DS_Store``, ``._x.jpg`` resource forks) are left out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    return [path for path in _walk_files(folder) if path.suffix.lower() in IMAGE_EXTENSIONS]


def _walk_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / name for name in filenames if not _is_hidden(Path(name)))
    return sorted(found)


@dataclass
class ProbeResult:
    ok: bool
    reason: str = ""
    size: tuple[int, int] = (0, 0)        # (height, width)
    mode: str = ""
    pil_decode: bool = False
    nbytes: int = 0


def probe_image(path) -> ProbeResult:
    """Check that ``path`` decodes, cheaply: the bad-file scan runs this on every file.

    JPEGs are decoded in Pillow's draft mode (libjpeg's DCT scaling to 1/8 size), which still
    reads every byte of the compressed stream, so truncated and corrupt files are caught at a
    fraction of a full decode's cost. Other formats are decoded fully (they are rarely large).
    """
    path = Path(path)
    try:
        nbytes = path.stat().st_size
    except OSError as error:
        return ProbeResult(False, f"unreadable: {error.strerror or error}")
    if nbytes == 0:
        return ProbeResult(False, "empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            fmt, mode = image.format, image.mode
            width, height = image.size
            if fmt not in DECODABLE_FORMATS:
                return ProbeResult(False, f"unsupported image format {fmt}", nbytes=nbytes)
            if fmt in ("JPEG", "MPO"):
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
    except UnidentifiedImageError:
        return ProbeResult(False, "not an image (content is not JPEG, PNG, BMP or GIF)",
                           nbytes=nbytes)
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, EOFError ...
        message = str(error).strip() or type(error).__name__
        return ProbeResult(False, f"corrupt or truncated: {message}", nbytes=nbytes)
    if width < 1 or height < 1:
        return ProbeResult(False, "image has no pixels", nbytes=nbytes)
    # TensorFlow's BMP decoder reads palette and 1-bit BMPs wrongly or not at all.
    pil_decode = fmt == "BMP" and mode not in ("RGB", "RGBA")
    return ProbeResult(True, size=(height, width), mode=mode, pil_decode=pil_decode,
                       nbytes=nbytes)


def read_image(path, image_size=None) -> np.ndarray:
    """One image file as uint8 ``(H, W, 3)`` RGB, decoded exactly as the pipeline decodes it.

    Grayscale, palette, alpha and CMYK images are converted to RGB. ``image_size`` (int or
    ``(H, W)``) resizes as evaluation does: shorter side, then centre crop. Raises
    ``ValueError`` naming the file when it cannot be decoded, ``FileNotFoundError`` when it
    does not exist.
    """
    from keras_resnet.data import pipeline

    return pipeline.read_image(path, image_size)


def pil_read_rgb(path) -> np.ndarray:
    """Pillow decode to RGB, for the files TensorFlow cannot decode faithfully."""
    with Image.open(path) as image:
        image.seek(0)
        transparent = image.mode == "P" and "transparency" in image.info
        if image.mode in ("RGBA", "LA", "PA") or transparent:
            image = image.convert("RGBA")
            return np.asarray(image)[..., :3].copy()
        return np.asarray(image.convert("RGB"))


# --- the bad-file scan -----------------------------------------------------------------------


def scan_files(paths, workers=None) -> list[ProbeResult]:
    """Probe every file. Large images are probed in threads (Pillow releases the GIL while it
    decodes); small ones, like CIFAR's 1-2 KB JPEGs, go faster in one thread, where opening
    the file costs more than decoding it."""
    paths = list(paths)
    sample = paths[:: max(1, len(paths) // 32)][:32]
    mean_bytes = np.mean([_size(p) for p in sample]) if sample else 0
    if len(paths) < 64 or mean_bytes < THREADED_SCAN_MIN_BYTES:
        return [probe_image(p) for p in paths]
    workers = workers or min(16, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(probe_image, paths, chunksize=16))


def _size(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p))


def _split_layout(root: Path) -> dict[str, Path] | None:
    """``{split: folder}`` when ``root`` holds a ``train/`` folder of class folders."""
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    train = children.get("train")
    if train is None or not _class_folders(train):
        return None
    layout = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if name in children:
                layout[split] = children[name]
                break
    return layout


def folder_source(root) -> Source:
    """A folder of class subfolders, optionally inside ``train/``, ``val/`` and ``test/``.

    Every file is probed first (``probe_image``); the ones that fail become ``bad_files`` and
    never reach the pipeline. Class folders with no readable image are left out of the class
    list, with a warning, so a model never gets an output it cannot learn.
    """
    root = Path(root)
    layout = _split_layout(root) or {"train": root}
    source = Source("folder", str(root), [])
    per_split: dict[str, list[tuple[str, Path]]] = {}
    folders_seen: set[str] = set()
    for split, folder in layout.items():
        entries = []
        for class_folder in _class_folders(folder):
            name = unicodedata.normalize("NFC", class_folder.name)
            folders_seen.add(name)
            for path in _walk_files(class_folder):
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    entries.append((name, path))
                else:
                    source.bad_files.append(
                        (str(path), f"not an image file ({path.suffix or 'no extension'})"))
        loose = [p for p in folder.iterdir() if p.is_file() and not _is_hidden(p)]
        if loose:
            source.warnings.append(f"{len(loose)} files directly in {folder} ignored: images "
                                   "belong in class subfolders")
        per_split[split] = entries

    all_entries = [entry for entries in per_split.values() for entry in entries]
    if not all_entries:
        raise ValueError(f"no images found in {root}: expected class subfolders holding "
                         f"{', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)} files")
    results = scan_files([path for _, path in all_entries])
    good = {name for (name, _), result in zip(all_entries, results) if result.ok}
    source.empty_classes = sorted(folders_seen - good)
    for name in source.empty_classes:
        source.warnings.append(f"class folder {name!r} ignored: it holds no readable images")
    source.class_names = sorted(good)
    if len(source.class_names) == 1:
        source.warnings.append(f"only one class ({source.class_names[0]!r}): a classifier "
                               "needs at least two")

    index = {name: i for i, name in enumerate(source.class_names)}
    results = iter(results)
    for split, entries in per_split.items():
        files, labels, pil_flags, sizes, nbytes = [], [], [], [], 0
        for (name, path), result in zip(entries, results):
            if not result.ok:
                source.bad_files.append((str(path), result.reason))
                continue
            files.append(str(path))
            labels.append(index[name])
            pil_flags.append(result.pil_decode)
            sizes.append(result.size)
            nbytes += result.nbytes
        if files:
            source.splits[split] = Split(np.asarray(labels, np.int32), files=files,
                                         pil_decode=np.asarray(pil_flags, bool), sizes=sizes,
                                         file_bytes=nbytes)
    source.bad_files.sort()
    if "train" not in source.splits:
        raise ValueError(f"no readable images found in {layout['train']} "
                         f"({len(source.bad_files)} bad files)")
    if "train" in layout and layout["train"] != root:
        missing = set(range(len(source.class_names))) - set(source.splits["train"].labels)
        for i in sorted(missing):
            source.warnings.append(f"class {source.class_names[i]!r} has no training images")
    return source


# --- in-memory sources -----------------------------------------------------------------------


def _check_arrays(x, y, what) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what}: x must be (N, H, W, C) images with C in 1, 3, 4; got shape "
                         f"{x.shape}")
    if len(x) != len(y):
        raise ValueError(f"{what}: x has {len(x)} images but y has {len(y)} labels")
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating) and x.size and x.max() <= 1.0:
            raise ValueError(f"{what}: x must hold 0-255 pixels, got floats in [0, 1]")
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] == 4:
        x = np.ascontiguousarray(x[..., :3])
    return x, y


def npz_source(path) -> Source:
    """An ``.npz`` with ``x`` (N, H, W, C uint8) and ``y`` (N,); optional ``x_val``/``y_val``,
    ``x_test``/``y_test`` and ``class_names``."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:
        raise ValueError(f"cannot read {path} as an .npz file: {error}") from None
    with archive:
        keys = set(archive.files)
        if not {"x", "y"} <= keys:
            raise ValueError(f"{path} must hold arrays 'x' and 'y'; it holds "
                             f"{', '.join(sorted(keys)) or 'nothing'}")
        arrays = {"train": _check_arrays(archive["x"], archive["y"], str(path))}
        for split in ("val", "test"):
            if f"x_{split}" in keys and f"y_{split}" in keys:
                arrays[split] = _check_arrays(archive[f"x_{split}"], archive[f"y_{split}"],
                                              f"{path} ({split})")
        names = [str(n) for n in archive["class_names"]] if "class_names" in keys else None
    return _array_source("npz", str(path), arrays, names)


def _array_source(kind, location, arrays, class_names=None) -> Source:
    labels = np.concatenate([y for _, y in arrays.values()])
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if class_names is None and labels.dtype.kind in "USO":
            class_names = sorted({str(v) for v in labels})
            lookup = {n: i for i, n in enumerate(class_names)}
            arrays = {split: (x, np.asarray([lookup[str(v)] for v in y]))
                      for split, (x, y) in arrays.items()}
            labels = np.concatenate([y for _, y in arrays.values()])
        else:
            raise ValueError(f"{location}: labels must be integers, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{location}: labels must not be negative")
    num_classes = int(labels.max()) + 1 if labels.size else 0
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    if len(class_names) < num_classes:
        raise ValueError(f"{location}: {len(class_names)} class names for labels up to "
                         f"{num_classes - 1}")
    shapes = {x.shape[1:3] for x, _ in arrays.values()}
    source = Source(kind, location, list(class_names), native_shape=shapes.pop()
                    if len(shapes) == 1 else None)
    for split, (x, y) in arrays.items():
        if len(x):
            source.splits[split] = Split(y.astype(np.int32), images=x)
    if "train" not in source.splits:
        raise ValueError(f"{location} holds no training images")
    return source


def shapes_source(spec) -> Source:
    params = shapes_module.parse_shapes_spec(spec)
    arrays = {}
    for split in shapes_module.SPLITS:
        if params[split]:
            arrays[split] = shapes_module.generate_shapes(split, params["classes"], params[split],
                                                          params["size"], params["seed"])
    return _array_source("shapes", spec, arrays,
                         shapes_module.shapes_class_names(params["classes"]))


def _unpickle(path: Path):
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="bytes")


def is_cifar_batches(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "data_batch_1").is_file()
                                or ((folder / "train").is_file() and (folder / "meta").is_file()))


def cifar_batches_source(folder) -> Source:
    """The CIFAR-10/100 "python version" folders (``cifar-10-batches-py``,
    ``cifar-100-python``), read directly from their pickled batches."""
    folder = Path(folder)

    def arrays(batch, label_key):
        x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x), np.asarray(batch[label_key], np.int32)

    try:
        if (folder / "data_batch_1").is_file():
            batches = sorted(folder.glob("data_batch_*"), key=lambda p: int(p.name.split("_")[-1]))
            parts = [arrays(_unpickle(p), b"labels") for p in batches]
            splits = {"train": (np.concatenate([x for x, _ in parts]),
                                np.concatenate([y for _, y in parts]))}
            if (folder / "test_batch").is_file():
                splits["test"] = arrays(_unpickle(folder / "test_batch"), b"labels")
            meta = _unpickle(folder / "batches.meta")
            names = [n.decode() for n in meta[b"label_names"]]
        else:
            splits = {"train": arrays(_unpickle(folder / "train"), b"fine_labels")}
            if (folder / "test").is_file():
                splits["test"] = arrays(_unpickle(folder / "test"), b"fine_labels")
            names = [n.decode() for n in _unpickle(folder / "meta")[b"fine_label_names"]]
    except (OSError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as error:
        raise ValueError(f"cannot read CIFAR batches in {folder}: {error}") from None
    return _array_source("cifar-batches", str(folder), splits, names)


# --- spec dispatch ---------------------------------------------------------------------------

KERAS_CIFAR_CACHE = {
    "cifar10": Path("~/.keras/datasets/cifar-10-batches-py"),
    "cifar100": Path("~/.keras/datasets/cifar-100-python"),
}


def open_source(spec) -> Source:
    """The ``Source`` for a data spec (see ``load_data``)."""
    spec = str(spec).strip()
    if not spec:
        raise ValueError("empty data spec")
    lowered = spec.lower()
    if lowered == "shapes" or lowered.startswith("shapes:"):
        return shapes_source(spec)
    if lowered.startswith("tfds:"):
        from keras_resnet.data import tfds_source

        return tfds_source.tfds_source(spec[5:])
    if lowered in KERAS_CIFAR_CACHE and not Path(spec).exists():
        local = KERAS_CIFAR_CACHE[lowered].expanduser()
        if is_cifar_batches(local):
            return cifar_batches_source(local)
        from keras_resnet.data import tfds_source

        return tfds_source.tfds_source(lowered)
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"data not found: {spec!r} is neither an existing folder or .npz file nor a known "
            "dataset (shapes, cifar10, cifar100, tfds:NAME)")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return npz_source(path)
        raise ValueError(f"{path} is a file but not an .npz: give a folder of class subfolders, "
                         "an .npz file or a dataset name")
    if is_cifar_batches(path):
        return cifar_batches_source(path)
    return folder_source(path)
