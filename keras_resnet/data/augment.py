"""Augmentation presets and switches, built from Keras 3 preprocessing layers.

An ``augment`` string is ``+``-joined tokens, each a preset or a single switch:

==============  ==========================================================================
token           what it does
==============  ==========================================================================
``none``        nothing
``cifar``       ``crop`` + ``flip`` (pad 4 and random crop at 32x32, horizontal flip)
``imagenet``    ``rrc`` + ``flip`` + ``jitter``
``crop``        random crop after padding by 1/8 of the size, or by ``crop_padding`` pixels
                (per image, each whole-pixel shift from -pad to +pad equally likely on each
                axis, the border black: torchvision's ``RandomCrop(padding=)``)
``reflect``     ``crop`` with the border filled by reflecting the image instead of with black
                (Page's ResNet-9 and airbench's choice): no artificial black edges for the
                first layers to learn; replaces ``crop``, so ``cifar+reflect`` is flip + this
``flip``        horizontal flip of half the images, drawn per image
``altflip``     alternating flip (airbench's derandomised flip, Jordan 2024): a random half of
                the images is mirrored in even epochs and the other half in odd ones, so
                every image is seen both ways in any two epochs in a row; replaces ``flip``
``rrc``         random resized crop, scale 0.08-1, aspect 3/4-4/3 (per image, before batching)
``jitter``      brightness, contrast, saturation, hue (``keras.layers.RandomColorJitter``)
``randaugment`` ``keras.layers.RandAugment`` (2 ops, magnitude 0.5)
``erasing``     random erasing, applied to a quarter of the images: a box of 2-33% of the
                area, of random shape, filled with noise (``keras.layers.RandomErasing``)
``cutout``      cutout (DeVries & Taylor 2017, as in Page's ResNet-9 recipe): a square of 1/4
                of the side (8x8 at 32x32) at a random place in every image, filled with the
                mean ImageNet colour, which the models' normalisation maps to about zero
                (``keras.layers.RandomErasing`` with a fixed size and probability 1)
==============  ==========================================================================

MixUp and CutMix (``keras.layers.MixUp``/``CutMix``) are separate alphas because they change
the labels. Two pieces are hand-written. The crop and the flip are one gather
(``shift_flip.RandomShiftFlip``): Keras's ``RandomCrop`` draws one crop per batch, and
``RandomTranslation`` + ``RandomFlip``, which give the same pixels, took about four times the CPU
(``benchmarks/bench_augment.py``). The random resized crop: images of different sizes must be
cropped one by one before batching, which Keras layers (built for batches of one size) do not
do; it uses ``tf.image.sample_distorted_bounding_box``.
"""
from __future__ import annotations

from dataclasses import dataclass

PRESETS = {
    "none": (),
    "cifar": ("crop", "flip"),
    "imagenet": ("rrc", "flip", "jitter"),
}
# Order in which switches run: geometry, then colour, then policies, then occlusion.
SWITCHES = ("rrc", "crop", "reflect", "flip", "altflip", "jitter", "randaugment", "erasing",
            "cutout")
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
# Scale range of the random resized crop used only to bring larger images to the training
# size when the preset itself has no ``rrc``: gentler than ImageNet's 0.08.
FIT_RRC_SCALE = (0.25, 1.0)
CROP_PAD_FRACTION = 1 / 8
# The crop switches and how each fills the border the shift uncovers.
CROP_FILL = {"crop": "constant", "reflect": "reflect"}
ERASING_PROBABILITY = 0.25
CUTOUT_SIDE_FRACTION = 1 / 4


def cutout_fill() -> tuple[float, ...]:
    """The cutout square's colour: the mean ImageNet colour in 0-255, which the models'
    normalisation maps to about zero. (Imported on use: ``keras_resnet.models`` loads Keras.)"""
    from keras_resnet.models.zoo import IMAGENET_MEAN

    return tuple(255.0 * m for m in IMAGENET_MEAN)


@dataclass(frozen=True)
class AugmentPlan:
    switches: tuple[str, ...]
    # Pixels the crop may shift the image by; None: 1/8 of each side (4 at 32x32, as He et
    # al. and torchvision). airbench shifts by 2 for its 10-epoch runs.
    crop_padding: int | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.switches)

    @property
    def random_resized_crop(self) -> bool:
        return "rrc" in self.switches

    @property
    def alternating_flip(self) -> bool:
        return "altflip" in self.switches

    @property
    def batch_switches(self) -> tuple[str, ...]:
        """The switches applied per batch by Keras layers (``rrc`` is cropped per image before
        batching, ``altflip`` per image by the pipeline, which knows the epoch)."""
        return tuple(s for s in self.switches if s not in ("rrc", "altflip"))

    def __str__(self):
        return "+".join(self.switches) or "none"


def parse_augment(augment, crop_padding: int | None = None) -> AugmentPlan:
    """``"cifar+randaugment"`` -> the switches it turns on, in run order; ``ValueError`` on an
    unknown token or a ``crop_padding`` below 1."""
    if crop_padding is not None and int(crop_padding) < 1:
        raise ValueError(f"crop_padding must be at least 1 pixel, got {crop_padding}")
    if augment is None or augment is False:
        return AugmentPlan(())
    if isinstance(augment, AugmentPlan):
        return augment
    tokens = [t.strip().lower() for t in str(augment).split("+") if t.strip()]
    chosen = set()
    for token in tokens:
        if token in PRESETS:
            chosen.update(PRESETS[token])
        elif token in SWITCHES:
            chosen.add(token)
        else:
            raise ValueError(f"unknown augmentation {token!r}: use presets "
                             f"{', '.join(PRESETS)} or switches {', '.join(SWITCHES)}, joined "
                             "with '+'")
    if "reflect" in chosen:
        chosen.discard("crop")             # the same crop, only the fill differs
    if "altflip" in chosen:
        chosen.discard("flip")             # the same flips, scheduled instead of drawn
    return AugmentPlan(tuple(s for s in SWITCHES if s in chosen),
                       None if crop_padding is None else int(crop_padding))


def _crop_padding_pixels(image_shape, crop_padding):
    """How far the crop shifts, ``(rows, columns)``: ``crop_padding`` pixels both ways, by
    default 1/8 of each side (4 at 32x32, as He et al. and torchvision)."""
    if crop_padding is not None:
        return int(crop_padding), int(crop_padding)
    return tuple(round(CROP_PAD_FRACTION * int(side)) for side in image_shape[:2])


def _layers(switches, image_shape, seed, crop_padding=None):
    """Keras layers for the batch switches; float32 even under a mixed-precision policy."""
    import keras

    from keras_resnet.data.shift_flip import RandomShiftFlip

    kw = {"dtype": "float32"}
    layers = []
    for i, switch in enumerate(switches):
        s = None if seed is None else seed + 101 * (i + 1)
        if switch in CROP_FILL or switch == "flip":
            if layers and isinstance(layers[-1], RandomShiftFlip):
                continue                       # the crop's layer flips as well
            crop = next((c for c in switches if c in CROP_FILL), None)
            layers.append(RandomShiftFlip(
                padding=_crop_padding_pixels(image_shape, crop_padding) if crop else (0, 0),
                fill_mode=CROP_FILL.get(crop, "constant"), flip="flip" in switches,
                seed=s, **kw))
        elif switch == "jitter":
            layers.append(keras.layers.RandomColorJitter(
                value_range=(0, 255), brightness_factor=0.2, contrast_factor=0.4,
                saturation_factor=(0.3, 0.7), hue_factor=0.05, seed=s, **kw))
        elif switch == "randaugment":
            layers.append(keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5,
                                                   seed=s, **kw))
        elif switch == "erasing":
            layers.append(keras.layers.RandomErasing(
                factor=(ERASING_PROBABILITY, ERASING_PROBABILITY), value_range=(0, 255),
                seed=s, **kw))
        elif switch == "cutout":
            area = CUTOUT_SIDE_FRACTION ** 2       # RandomErasing takes each side as sqrt(scale)
            layers.append(keras.layers.RandomErasing(
                factor=(1.0, 1.0), scale=(area, area), fill_value=cutout_fill(),
                value_range=(0, 255), seed=s, **kw))
    return layers


def build_batch_augmenter(plan: AugmentPlan, image_shape, seed=None):
    """A function ``images (B, H, W, 3) -> float32 images`` for the plan's batch switches, or
    ``None`` when there is nothing to do per batch."""
    import tensorflow as tf

    layers = _layers(plan.batch_switches, image_shape, seed, plan.crop_padding)
    if not layers:
        return None

    @tf.autograph.experimental.do_not_convert
    def augment_batch(images):
        images = tf.cast(images, tf.float32)
        for layer in layers:
            images = layer(images, training=True)
        return tf.clip_by_value(images, 0.0, 255.0)

    return augment_batch


def build_mixer(mixup: float, cutmix: float, seed=None):
    """A function ``(images, one_hot_labels) -> (images, labels)`` applying MixUp or CutMix
    (one of the two, chosen per batch with equal odds, when both are on), or ``None``."""
    import keras
    import tensorflow as tf

    if mixup < 0 or cutmix < 0:
        raise ValueError("mixup and cutmix are alphas and must not be negative")
    mixers = []
    if mixup > 0:
        mixers.append(keras.layers.MixUp(alpha=float(mixup), seed=seed, dtype="float32"))
    if cutmix > 0:
        mixers.append(keras.layers.CutMix(factor=float(cutmix), seed=seed, dtype="float32"))
    if not mixers:
        return None

    def apply(layer, images, labels):
        out = layer({"images": images, "labels": labels}, training=True)
        return tf.cast(out["images"], tf.float32), tf.cast(out["labels"], tf.float32)

    @tf.autograph.experimental.do_not_convert
    def mix(images, labels):
        images = tf.cast(images, tf.float32)
        labels = tf.cast(labels, tf.float32)
        if len(mixers) == 1:
            return apply(mixers[0], images, labels)
        use_first = tf.random.uniform((), seed=seed) < 0.5
        return tf.cond(use_first, lambda: apply(mixers[0], images, labels),
                       lambda: apply(mixers[1], images, labels))

    return mix


def random_resized_crop(image, size, scale=RRC_SCALE, ratio=RRC_RATIO, seed=None):
    """One image (H, W, 3) -> a random crop of ``scale`` of its area and aspect ``ratio``,
    resized to ``size`` (H, W); uint8 out."""
    import tensorflow as tf

    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
        min_object_covered=0.0, aspect_ratio_range=ratio, area_range=scale, max_attempts=10,
        use_image_if_no_bounding_boxes=True, seed=seed)
    crop = tf.slice(image, begin, crop_size)
    resized = tf.image.resize(crop, size, method="bilinear", antialias=True)
    return tf.saturate_cast(tf.round(resized), tf.uint8)
