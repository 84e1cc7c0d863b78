"""Patch-whitening stem: a frozen convolution initialised from the data (Page 2018, airbench).

The ``"whitening"`` stem replaces a network's first convolution with a fixed 2x2 convolution
whose filters are the eigenvectors of the covariance of 2x2 image patches, each scaled by
``1 / sqrt(eigenvalue + eps)``, and their negatives (24 filters for RGB). Its outputs are
decorrelated with unit variance, so the next layer starts from whitened inputs; on CIFAR-10
this lets a few-epoch schedule learn much faster (Page, "How to train your ResNet 8", 2019;
Jordan, "94% on CIFAR-10 in 3.29 seconds", 2024).

The layer is a plain, non-trainable ``keras.layers.Conv2D`` named ``stem_whiten``: a saved
model needs nothing from this package to load. ``init_patch_whitening`` sets it from a sample
of training images (``fit`` does this before training); Keras has no data-dependent
initialiser for convolutions, hence this module.
"""
from __future__ import annotations

import numpy as np

WHITENING_LAYER = "stem_whiten"
PATCH_SIZE = 2
CHANNELS = 3
# Both signs of every eigen-filter, so a following ReLU keeps all of the information.
WHITENING_FILTERS = 2 * PATCH_SIZE * PATCH_SIZE * CHANNELS
# Added to the eigenvalues (inputs normalised to unit variance per channel): bounds the gain
# of the faintest directions, which are mostly JPEG and sensor noise.
WHITENING_EPS = 5e-4
DEFAULT_SAMPLE_IMAGES = 5000
PATCHES_PER_CHUNK = 1 << 20


def whitening_layer(model):
    """The model's ``stem_whiten`` layer, or ``None``."""
    for layer in model.layers:
        if layer.name == WHITENING_LAYER:
            return layer
    return None


def whitening_kernel(inputs: np.ndarray, eps: float = WHITENING_EPS) -> np.ndarray:
    """The ``(2, 2, 3, 24)`` kernel that whitens the 2x2 patches of ``inputs`` (N, H, W, 3),
    as the layer sees them (after the model's normalisation)."""
    import tensorflow as tf

    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 4 or inputs.shape[-1] != CHANNELS or min(inputs.shape[1:3]) < PATCH_SIZE:
        raise ValueError(f"patch whitening needs images of shape (N, H>=2, W>=2, 3), "
                         f"got {inputs.shape}")
    dims = PATCH_SIZE * PATCH_SIZE * CHANNELS
    covariance, count = np.zeros((dims, dims)), 0
    # A few images at a time: every pixel starts a patch, so the patches of all the images
    # at once would take 4x their memory (and ImageNet-size images would not fit).
    chunk = max(1, PATCHES_PER_CHUNK // (inputs.shape[1] * inputs.shape[2]))
    for start in range(0, len(inputs), chunk):
        patches = tf.image.extract_patches(
            inputs[start:start + chunk], sizes=[1, PATCH_SIZE, PATCH_SIZE, 1],
            strides=[1, 1, 1, 1], rates=[1, 1, 1, 1], padding="VALID").numpy()
        # Flattened as (row, column, channel): the order of a Conv2D kernel's first 3 axes.
        patches = patches.reshape(-1, dims).astype(np.float64)
        covariance += patches.T @ patches
        count += len(patches)
    covariance /= count
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    filters = eigenvectors[:, order] / np.sqrt(np.maximum(eigenvalues[order], 0.0) + eps)
    kernel = np.concatenate([filters, -filters], axis=1)
    return kernel.reshape(PATCH_SIZE, PATCH_SIZE, CHANNELS, WHITENING_FILTERS).astype(np.float32)


def init_patch_whitening(model, images, eps: float = WHITENING_EPS) -> bool:
    """Set ``model``'s whitening stem from ``images`` (0-255 pixels, as the model takes them).

    Returns ``False`` (and does nothing) when the model has no whitening stem.
    """
    import keras

    layer = whitening_layer(model)
    if layer is None:
        return False
    images = np.asarray(images, dtype=np.float32)
    to_layer = keras.Model(model.input, layer.input)
    inputs = np.asarray(to_layer.predict(images, batch_size=256, verbose=0), dtype=np.float32)
    layer.kernel.assign(whitening_kernel(inputs, eps))
    return True


def sample_images(dataset, size: int, count: int = DEFAULT_SAMPLE_IMAGES) -> np.ndarray:
    """About ``count`` images spread evenly over a batched ``(images, labels)`` dataset of
    ``size`` images: every k-th one, so a split stored class by class gives every class."""
    stride = max(1, -(-int(size) // count))
    for images, _ in dataset.unbatch().shard(stride, 0).batch(count).take(1):
        return np.asarray(images)
    raise ValueError("patch whitening needs training images, and the dataset is empty")
