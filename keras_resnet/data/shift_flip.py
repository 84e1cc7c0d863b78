"""Per-image whole-pixel shifts and horizontal flips of a batch, as one gather.

The pixels ``keras.layers.RandomTranslation`` (nearest sampling) followed by
``keras.layers.RandomFlip`` give for the ``crop``, ``reflect`` and ``flip`` switches, at about a
quarter of the CPU time (``benchmarks/bench_augment.py``): RandomTranslation resamples through
``ImageProjectiveTransformV3`` and RandomFlip selects between the batch and its mirror with
``tf.where``; here each output pixel's source is an index (shift, mirror and border rule folded
in) and one ``tf.gather`` reads them all. Keras's ``RandomCrop`` would be the obvious layer, but
it draws one crop for the whole batch.
"""
from __future__ import annotations

import keras
import tensorflow as tf

FILL_MODES = ("constant", "reflect")


def source_indices(offsets, size: int, fill_mode: str):
    """Where each output position reads from: ``offsets[:, None] + range(size)`` folded back
    inside ``0..size-1`` by ``reflect`` (Keras's rule, which repeats the edge pixel:
    ``d c b a | a b c d | d c b a``), or ``size`` (a zero pixel) outside it for ``constant``."""
    positions = offsets[:, None] + tf.range(size)[None, :]
    if fill_mode == "reflect":
        positions = tf.where(positions < 0, -positions - 1, positions)
        return tf.where(positions >= size, 2 * size - 1 - positions, positions)
    return tf.where((positions < 0) | (positions >= size), size, positions)


def shift_and_flip(images, rows_from, cols_from, fill_mode: str):
    """``images`` (B, H, W, C) read at ``rows_from`` (B, H) and ``cols_from`` (B, W): indices
    from :func:`source_indices`, where ``H`` or ``W`` stands for the zero fill."""
    shape = tf.shape(images)
    if fill_mode == "constant":
        # One zero row and column past the edge: the fill's index reads zeros.
        images = tf.pad(images, [[0, 0], [0, 1], [0, 1], [0, 0]])
    stride = tf.shape(images)[2]
    flat = tf.reshape(images, (shape[0], -1, shape[3]))
    pixels = rows_from[:, :, None] * stride + cols_from[:, None, :]
    out = tf.gather(flat, tf.reshape(pixels, (shape[0], -1)), axis=1, batch_dims=1)
    return tf.reshape(out, shape)


class RandomShiftFlip(keras.layers.Layer):
    """Shift each image by a whole number of pixels from ``-padding`` to ``+padding`` on each
    axis (each equally likely, as pad-and-crop draws them) and mirror it left-right with
    probability 1/2 when ``flip``. ``padding``: pixels, or ``(rows, columns)``. The border a
    shift uncovers is black (``constant``) or the image reflected (``reflect``). Training only:
    at inference the images pass unchanged."""

    def __init__(self, padding=0, fill_mode: str = "constant", flip: bool = False,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        if fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
        padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        if len(padding) != 2 or min(padding) < 0:
            raise ValueError(f"padding must be 0 or more pixels, or two such, got {padding}")
        self.padding = tuple(int(p) for p in padding)
        self.fill_mode, self.flip = fill_mode, bool(flip)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        images = tf.cast(images, self.compute_dtype)
        if not training:
            return images
        batch, height, width = tf.unstack(tf.shape(images)[:3])
        tf.debugging.assert_less_equal(
            tf.constant(self.padding), tf.stack([height, width]),
            message="the crop's padding exceeds the image side")

        def draw_offsets(pad):
            return keras.random.randint((batch,), -pad, pad + 1, seed=self.seed_generator,
                                        dtype="int32")

        rows = source_indices(draw_offsets(self.padding[0]), height, self.fill_mode)
        cols = source_indices(draw_offsets(self.padding[1]), width, self.fill_mode)
        if self.flip:
            mirrored = keras.random.uniform((batch, 1), seed=self.seed_generator) < 0.5
            cols = tf.where(mirrored, tf.reverse(cols, [1]), cols)
        return shift_and_flip(images, rows, cols, self.fill_mode)

    def get_config(self):
        return dict(super().get_config(), padding=self.padding, fill_mode=self.fill_mode,
                    flip=self.flip, seed=self.seed)
