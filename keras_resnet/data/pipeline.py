"""``load_data``: a data spec -> ``ImageData`` with batched ``tf.data`` train/val/test pipelines.

Train: (parallel decode) -> fit to the image size -> cache -> shuffle -> (alternating flip) ->
batch -> augment -> one-hot -> MixUp/CutMix -> prefetch; with the alternating flip, two such
passes (an even epoch, then an odd one) over one cache. Eval: (parallel decode) -> fit ->
cache -> batch -> prefetch. Images stay raw 0-255 pixels (normalisation is inside the model).
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_resnet.data import augment as augment_module
from keras_resnet.data.sources import SPLITS, Source, Split, open_source, probe_image, pil_read_rgb

log = logging.getLogger("keras_resnet.data")

AUTOTUNE = tf.data.AUTOTUNE
# Evaluation resizes larger images so the centre crop keeps this fraction of the shorter side
# (the usual 256 -> 224 ImageNet evaluation).
EVAL_CROP_FRACTION = 0.875
DEFAULT_LARGE_SIZE = 224
CACHE_RAM_FRACTION = 0.25
SHUFFLE_BUFFER_BYTES = 512 << 20


# --- sizes -----------------------------------------------------------------------------------


def parse_image_size(image_size) -> tuple[int, int] | None:
    """``None``, ``32``, ``(32, 32)``, ``"32"`` or ``"32x48"`` -> ``(H, W)`` or ``None``."""
    if image_size is None:
        return None
    if isinstance(image_size, str):
        parts = image_size.lower().replace(",", "x").split("x")
        try:
            image_size = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"bad image size {image_size!r}: use N or HxW") from None
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    image_size = tuple(int(v) for v in image_size)
    if len(image_size) == 1:
        image_size = image_size * 2
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f"bad image size {image_size!r}: use N or (H, W) with positive sides")
    return image_size


def choose_image_size(sizes: Counter) -> tuple[int, int]:
    """The size to batch at when the caller gives none: the images' own when they all share
    one, else a square of the median shorter side, at most 224."""
    if not sizes:
        return DEFAULT_LARGE_SIZE, DEFAULT_LARGE_SIZE
    if len(sizes) == 1:
        return next(iter(sizes))
    shorter = np.repeat([min(hw) for hw in sizes], list(sizes.values()))
    side = int(min(DEFAULT_LARGE_SIZE, np.median(shorter)))
    return side, side


def fit_for_eval(image, size):
    """Resize the shorter side, then centre-crop to ``size``; identity when already ``size``.

    Images larger than ``size`` are resized so the crop keeps ``EVAL_CROP_FRACTION`` of them;
    smaller ones are scaled up to just cover ``size``.
    """
    height, width = size
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)

    def resize_and_crop():
        larger = tf.logical_and(h > height, w > width)
        fraction = tf.where(larger, EVAL_CROP_FRACTION, 1.0)
        scale = tf.maximum(height / h, width / w) / fraction
        new_h = tf.maximum(height, tf.cast(tf.round(h * scale), tf.int32))
        new_w = tf.maximum(width, tf.cast(tf.round(w * scale), tf.int32))
        resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear",
                                  antialias=True)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        crop = resized[top:top + height, left:left + width]
        return tf.saturate_cast(tf.round(crop), tf.uint8)

    same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
    out = tf.cond(same, lambda: tf.cast(image, tf.uint8), resize_and_crop)
    return tf.ensure_shape(out, (height, width, 3))


# --- decoding --------------------------------------------------------------------------------


def _pil_decode_bytes(data: np.ndarray) -> np.ndarray:
    import io

    return pil_read_rgb(io.BytesIO(data.tobytes()))


def decode_image_bytes(data, pil_decode=None):
    """Encoded bytes -> uint8 (H, W, 3). ``pil_decode`` (a bool tensor) routes the files that
    TensorFlow's decoders get wrong (palette BMPs) to Pillow; ``None`` means never."""

    def with_tensorflow():
        # JPEGs through decode_jpeg with the accurate DCT: decode_image uses libjpeg's fast
        # integer DCT, which on CIFAR-10's JPEGs is ~1 level per pixel off what Pillow (and so
        # torchvision and timm) decode. The images are decoded once and cached, so it is free.
        return tf.cond(
            tf.io.is_jpeg(data),
            lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False,
                                       dtype=tf.uint8))

    def with_pillow():
        # As a uint8 vector: NumPy's bytes scalars would drop trailing zero bytes.
        raw = tf.io.decode_raw(data, tf.uint8)
        return tf.numpy_function(_pil_decode_bytes, [raw], tf.uint8, stateful=False)

    if pil_decode is None:
        image = with_tensorflow()
    else:
        image = tf.cond(pil_decode, with_pillow, with_tensorflow)
    return tf.ensure_shape(image, (None, None, 3))


def read_image(path, image_size=None) -> np.ndarray:
    """See ``keras_resnet.data.read_image``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    probe = probe_image(path)
    if not probe.ok:
        raise ValueError(f"cannot decode image {path}: {probe.reason}")
    data = tf.io.read_file(str(path))
    try:
        image = decode_image_bytes(data, tf.constant(probe.pil_decode))
        size = parse_image_size(image_size)
        if size is not None:
            image = fit_for_eval(image, size)
        return image.numpy()
    except (tf.errors.OpError, ValueError) as error:
        reason = getattr(error, "message", None) or str(error)
        raise ValueError(f"cannot decode image {path}: {reason.strip().splitlines()[0]}") from None


# --- the stratified split ---------------------------------------------------------------------


def stratified_split(labels, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)``: ``round(n * fraction)`` of each class's ``n`` images to val.

    Hand-written rather than scikit-learn's ``train_test_split(stratify=...)``, which rounds
    over the whole set and refuses classes of one image: here every class with two or more
    images gives at least one to val and keeps at least one for training, a one-image class
    stays in train, and each class is shuffled by its own generator (``seed``, class), so a
    class's split does not move when another class gains images.
    """
    labels = np.asarray(labels)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {fraction}")
    val = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if fraction == 0 or len(members) < 2:
            continue
        count = min(max(int(round(len(members) * fraction)), 1), len(members) - 1)
        order = np.random.default_rng([int(seed), int(label)]).permutation(len(members))
        val.append(members[order[:count]])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


# --- ImageData -------------------------------------------------------------------------------


def _memory_budget() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(total * CACHE_RAM_FRACTION)


class ImageData:
    """Batched pipelines and what goes with them (see ``load_data``).

    ``train`` is shuffled and augmented; ``val`` and ``test`` are not; any may be ``None``.
    """

    def __init__(self, source: Source, splits: dict, *, spec, batch_size, image_size, seed,
                 augment, mixup, cutmix, one_hot, cache, drop_remainder):
        self.spec = spec
        self.source = source
        self.class_names = list(source.class_names)
        self.num_classes = len(self.class_names)
        self.bad_files = list(source.bad_files)
        self.warnings = list(source.warnings)
        self.splits = splits
        self.batch_size = int(batch_size)
        self.image_shape = (*image_size, 3)
        self.seed = seed
        self.augment = augment
        self.mixup, self.cutmix = float(mixup), float(cutmix)
        self.one_hot = bool(one_hot) or self.mixup > 0 or self.cutmix > 0
        self.cache = cache
        self.drop_remainder = drop_remainder
        self.num_examples = {split: len(splits[split]) if split in splits else 0
                             for split in SPLITS}
        # Which images the alternating flip mirrors in even epochs, fixed for the run.
        self._flip_seed = tf.constant(
            np.random.default_rng(seed).integers(2 ** 31) if seed is not None
            else np.random.randint(2 ** 31), tf.int64)
        # Two with the alternating flip: one iteration of ``train`` is an even epoch, then an
        # odd one (fit repeats it and counts steps per epoch).
        self.train_passes = 2 if self.augment.alternating_flip else 1
        self.train = self._pipeline("train", training=True, contract_labels=True,
                                    passes=self.train_passes)
        self.val = self._pipeline("val", False, True) if "val" in splits else None
        self.test = self._pipeline("test", False, True) if "test" in splits else None

    def __repr__(self):
        counts = ", ".join(f"{k}={v}" for k, v in self.num_examples.items() if v)
        return (f"ImageData({self.spec!r}, classes={self.num_classes}, "
                f"image_shape={self.image_shape}, {counts})")

    # -- building blocks --

    def _images_dataset(self, split_name: str, training: bool, passes: int = 1):
        """Unbatched ``(image uint8 (H, W, 3), label int32)`` at the image size; shuffled when
        ``training``. Deterministic work (decode, eval resize) comes before the cache, random
        work (random resized crop) after it.

        Returns a list of ``passes`` datasets over one shared cache. With the alternating flip
        the second pass mirrors exactly the images the first does not (``_flip_by_parity``)."""
        split = self.splits[split_name]
        alternating = training and self.augment.alternating_flip
        size = self.image_shape[:2]
        at_size = self._all_at_size(split)
        random_crop = training and (self.augment.random_resized_crop or (
            self.augment.enabled and not at_size))

        def fit(image):
            return tf.ensure_shape(image, (*size, 3)) if at_size else fit_for_eval(image, size)

        encoded = split.images is None
        any_pil = encoded and split.pil_decode is not None and bool(split.pil_decode.any())
        if not encoded:
            dataset = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
            cached_bytes = 0                   # already in memory
            if not (random_crop or at_size):
                dataset = dataset.map(lambda image, label: (fit(image), label),
                                      num_parallel_calls=AUTOTUNE)
                cached_bytes = len(split) * size[0] * size[1] * 3
        else:
            dataset = self._encoded(split)     # (path or bytes, label, pil_decode)
            needs_read = split.files is not None
            if random_crop:
                # Cache the encoded bytes: crops are drawn from the full image every epoch.
                cached_bytes = split.file_bytes
                if needs_read:
                    dataset = dataset.map(
                        lambda path, label, pil: (tf.io.read_file(path), label, pil),
                        num_parallel_calls=AUTOTUNE)
            else:
                cached_bytes = len(split) * size[0] * size[1] * 3

                @tf.autograph.experimental.do_not_convert
                def read_and_decode(path_or_data, label, pil):
                    data = tf.io.read_file(path_or_data) if needs_read else path_or_data
                    return fit(decode_image_bytes(data, pil if any_pil else None)), label

                dataset = dataset.map(read_and_decode, num_parallel_calls=AUTOTUNE)
                # The scan catches bad files up front; this keeps a file that broke since
                # (or that only TensorFlow rejects) from ending an epoch.
                dataset = dataset.ignore_errors(log_warning=True)

        if alternating:
            # Each image's place in the split fixes which pass mirrors it.
            dataset = dataset.enumerate()
        if self.cache and 0 < cached_bytes <= _memory_budget():
            dataset = dataset.cache()
        if training:
            per_image = (cached_bytes or split.decoded_bytes()) // max(1, len(split))
            buffer = int(min(len(split), max(1024, SHUFFLE_BUFFER_BYTES // max(1, per_image))))
        cached = dataset
        result = []
        for parity in range(passes):
            dataset = cached
            if training:
                # A different seed per pass: two shuffles with one seed give one order.
                seed = None if self.seed is None else self.seed + parity
                dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
            if random_crop:
                dataset = self._random_crops(dataset, encoded, any_pil, alternating)
            if alternating:
                dataset = dataset.map(self._flip_by_parity(parity), num_parallel_calls=AUTOTUNE)
            result.append(dataset)
        return result

    def _random_crops(self, dataset, encoded, any_pil, indexed):
        """Random resized crops (decoding cached bytes first); ``indexed``: elements carry
        their index in front, which passes through."""
        size = self.image_shape[:2]
        scale = (augment_module.RRC_SCALE if self.augment.random_resized_crop
                 else augment_module.FIT_RRC_SCALE)
        seed = self.seed

        @tf.autograph.experimental.do_not_convert
        def crop(image, label, *pil):
            if encoded:
                image = decode_image_bytes(image, pil[0] if any_pil else None)
            return augment_module.random_resized_crop(image, size, scale, seed=seed), label

        if indexed:
            dataset = dataset.map(lambda index, element: (index, crop(*element)),
                                  num_parallel_calls=AUTOTUNE)
        else:
            dataset = dataset.map(crop, num_parallel_calls=AUTOTUNE)
        if encoded:
            dataset = dataset.ignore_errors(log_warning=True)
        return dataset

    def _flip_by_parity(self, parity: int):
        """``(index, (image, label)) -> (image, label)``, the image mirrored when its own
        random bit (fixed by the seed and its index) differs from ``parity``: airbench's
        alternating flip, a random half in one pass and the other half in the next."""
        seed = self._flip_seed

        def flip(index, element):
            image, label = element
            bit = tf.random.stateless_uniform((), seed=tf.stack([seed, index])) < 0.5
            mirror = tf.not_equal(bit, bool(parity))
            return tf.where(mirror, tf.image.flip_left_right(image), image), label

        return flip

    @staticmethod
    def _encoded(split: Split):
        if split.stream is not None:
            return split.stream.map(lambda data, label: (data, label, False))
        return tf.data.Dataset.from_tensor_slices((split.files, split.labels, split.pil_decode))

    def _all_at_size(self, split: Split) -> bool:
        return set(split.image_sizes()) == {tuple(self.image_shape[:2])}

    def _batched(self, dataset):
        return dataset.batch(self.batch_size, drop_remainder=self.drop_remainder,
                             num_parallel_calls=AUTOTUNE)

    def _pipeline(self, split: str, training: bool, contract_labels: bool, passes: int = 1,
                  first_epoch: int = 0):
        """Batched pipeline; ``contract_labels``: one-hot and MixUp/CutMix as configured,
        else int32 labels and no mixing. ``passes``: passes over the images in one
        iteration (``train_passes`` for ``train``); ``first_epoch``: the epoch it starts at,
        whose parity picks the first pass of the alternating flip."""
        if split == "all":
            parts = [self._pipeline(s, training, contract_labels) for s in SPLITS
                     if s in self.splits]
            result = parts[0]
            for part in parts[1:]:
                result = result.concatenate(part)
            return result
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: use train, val, test or all")
        if split not in self.splits:
            raise ValueError(f"{self.spec} has no {split} split")
        passes = self._images_dataset(split, training, passes)
        if first_epoch % len(passes):
            passes = passes[1:] + passes[:1]
        dataset = self._batched(passes[0])
        for later in passes[1:]:
            dataset = dataset.concatenate(self._batched(later))
        if training:
            augmenter = augment_module.build_batch_augmenter(self.augment, self.image_shape,
                                                             self.seed)
            if augmenter is not None:
                dataset = dataset.map(lambda x, y: (augmenter(x), y),
                                      num_parallel_calls=AUTOTUNE)
        if contract_labels and self.one_hot:
            depth = self.num_classes
            dataset = dataset.map(lambda x, y: (x, tf.one_hot(y, depth, dtype=tf.float32)),
                                  num_parallel_calls=AUTOTUNE)
            mixer = augment_module.build_mixer(self.mixup, self.cutmix, self.seed)
            if training and mixer is not None:
                dataset = dataset.map(mixer, num_parallel_calls=AUTOTUNE)
        return dataset.prefetch(AUTOTUNE)

    # -- public --

    def train_from_epoch(self, epoch: int):
        """``train`` for a run resuming at ``epoch`` (0-based): with the alternating flip an odd
        epoch starts with the odd pass, so a resumed run mirrors what an unbroken one would."""
        if epoch % self.train_passes == 0:
            return self.train
        return self._pipeline("train", training=True, contract_labels=True,
                              passes=self.train_passes, first_epoch=epoch)

    def dataset(self, split: str = "train", training: bool = False):
        """The batched dataset of ``split`` (``train``, ``val``, ``test`` or ``all``), with
        int32 labels.

        ``training=False`` (default): unshuffled and un-augmented, in the source's order.
        ``training=True``: shuffled and augmented like ``train`` (but without MixUp/CutMix,
        which need one-hot labels).
        """
        return self._pipeline(split, training, contract_labels=False)

    def numpy(self, split: str = "all") -> tuple[np.ndarray, np.ndarray]:
        """All images and int labels of ``split`` as NumPy arrays (for small data)."""
        images, labels = [], []
        for x, y in self.dataset(split).as_numpy_iterator():
            images.append(x)
            labels.append(y)
        if not images:
            return np.zeros((0, *self.image_shape), np.uint8), np.zeros((0,), np.int32)
        return np.concatenate(images), np.concatenate(labels)

    def labels(self, split: str = "train") -> np.ndarray:
        """The int labels of ``split``, in the source's order, without reading any image."""
        if split not in self.splits:
            raise ValueError(f"{self.spec} has no {split} split")
        return np.asarray(self.splits[split].labels)

    def fold(self, train_indices, val_indices) -> "ImageData":
        """Cross-validation: a copy whose ``train`` and ``val`` are the given rows of this
        ``train`` split, with the same batching, augmentation and label options."""
        if "train" not in self.splits:
            raise ValueError(f"{self.spec} has no train split to cross-validate")
        train = self.splits["train"]
        splits = {"train": train.subset(train_indices), "val": train.subset(val_indices)}
        return ImageData(self.source, splits, spec=self.spec, batch_size=self.batch_size,
                         image_size=self.image_shape[:2], seed=self.seed, augment=self.augment,
                         mixup=self.mixup, cutmix=self.cutmix, one_hot=self.one_hot,
                         cache=self.cache, drop_remainder=self.drop_remainder)


def load_data(spec, *, batch_size=128, image_size=None, val_split=0.1, seed=0, augment=None,
              mixup=0.0, cutmix=0.0, one_hot=False, strict=False, cache=True,
              drop_remainder=False, crop_padding=None, split_seed=None) -> ImageData:
    """Load a dataset and build its ``tf.data`` pipelines.

    ``spec``: a folder of class subfolders (optionally split into ``train/``, ``val/`` or
    ``validation/``, ``test/``), an ``.npz`` file (``x``, ``y``), a ``cifar-10-batches-py``
    folder, ``shapes[:options]``, ``cifar10``, ``cifar100`` or ``tfds:NAME``.
    ``val_split``: fraction of each class moved from train to val when the source has no
    validation split (stratified, fixed by ``split_seed``, which defaults to ``seed``: give
    it apart to train with other seeds and still score on the same images). ``augment``: see
    ``keras_resnet.data.augment``; ``crop_padding``: pixels its crop shifts by (default 1/8
    of the side). ``strict``: refuse data with bad files or empty class
    folders instead of skipping them.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    plan = augment_module.parse_augment(augment, crop_padding)
    if mixup < 0 or cutmix < 0:
        raise ValueError("mixup and cutmix are alphas and must not be negative")
    if not 0.0 <= float(val_split) < 1.0:
        raise ValueError(f"val_split must be in [0, 1), got {val_split}")
    source = open_source(spec)
    refuse_if_strict(source, strict)
    log_problems(source)
    splits = dict(source.splits)
    if "val" not in splits and val_split > 0:
        train_idx, val_idx = stratified_split(splits["train"].labels, float(val_split),
                                              seed if split_seed is None else split_seed)
        if len(val_idx):
            splits["val"] = splits["train"].subset(val_idx)
            splits["train"] = splits["train"].subset(train_idx)
    size = parse_image_size(image_size)
    if size is None:
        sizes = Counter()
        for split in splits.values():
            sizes.update(split.image_sizes())
        size = choose_image_size(sizes)
    return ImageData(source, splits, spec=str(spec), batch_size=batch_size, image_size=size,
                     seed=seed, augment=plan, mixup=mixup, cutmix=cutmix, one_hot=one_hot,
                     cache=cache, drop_remainder=drop_remainder)


def refuse_if_strict(source: Source, strict: bool):
    """``strict``: bad files or empty class folders are an error that names them."""
    problems = [f"{path} ({reason})" for path, reason in source.bad_files]
    problems += [f"{name}/ (empty class folder)" for name in source.empty_classes]
    if strict and problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        raise ValueError(f"{len(problems)} bad files or folders in {source.location} "
                         f"(strict): {shown}")


def log_problems(source: Source):
    """Bad files (left out of every split) and warnings, logged once with a count."""
    if source.bad_files:
        shown = "; ".join(f"{path} ({reason})" for path, reason in source.bad_files[:10])
        log.warning("skipped %d bad files in %s: %s%s", len(source.bad_files), source.location,
                    shown, " ..." if len(source.bad_files) > 10 else "")
    for warning in source.warnings:
        log.warning("%s", warning)
