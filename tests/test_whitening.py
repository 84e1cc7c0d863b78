"""The patch-whitening stem: the filters whiten 2x2 patches, the layer stays frozen through
training and fine-tuning, and ``fit`` fits it to the training images."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_resnet.models import create_model
from keras_resnet.models.whitening import (WHITENING_LAYER, init_patch_whitening,
                                           whitening_kernel, whitening_layer)


def _smooth_images(count=64, size=16, seed=0):
    """Random images blurred so that neighbouring pixels and channels are strongly correlated,
    as in photographs (raw white noise would already be white)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(count, size + 2, size + 2, 1)).astype(np.float32)
    blurred = (noise[:, :-2, :-2] + noise[:, 1:-1, 1:-1] + noise[:, 2:, 2:]
               + noise[:, 1:-1, :-2] + noise[:, :-2, 1:-1])
    tint = rng.normal(size=(count, size, size, 3)).astype(np.float32) * 0.3
    return blurred + tint


def _patch_outputs(inputs, kernel):
    return keras.ops.convert_to_numpy(keras.ops.conv(inputs, kernel, padding="valid"))


def test_kernel_whitens_the_patches_it_was_fitted_to():
    inputs = _smooth_images()
    kernel = whitening_kernel(inputs, eps=1e-9)
    assert kernel.shape == (2, 2, 3, 24)
    out = _patch_outputs(inputs, kernel).reshape(-1, 24)
    covariance = out[:, :12].T @ out[:, :12] / len(out)
    np.testing.assert_allclose(covariance, np.eye(12), atol=1e-3)
    np.testing.assert_allclose(out[:, 12:], -out[:, :12], atol=1e-5)
    # ... while the raw patches are far from white.
    raw = _patch_outputs(inputs, np.eye(12, dtype=np.float32).reshape(2, 2, 3, 12))
    raw_cov = raw.reshape(-1, 12).T @ raw.reshape(-1, 12) / raw.size * 12
    assert np.abs(raw_cov - np.eye(12)).max() > 0.5


def test_kernel_rejects_images_without_three_channels():
    with pytest.raises(ValueError, match="patch whitening needs images"):
        whitening_kernel(np.zeros((4, 8, 8, 1)))


def test_whitening_stem_is_a_frozen_plain_conv():
    model = create_model("resnet9", stem="whitening", input_shape=(32, 32, 3))
    layer = whitening_layer(model)
    assert isinstance(layer, keras.layers.Conv2D) and not layer.trainable
    assert layer.kernel.shape == (2, 2, 3, 24)
    assert model.get_layer("stem_bn").output.shape[1:] == (31, 31, 24)
    assert layer.kernel.path not in {v.path for v in model.trainable_weights}
    assert whitening_layer(create_model("resnet9")) is None
    with pytest.raises(ValueError, match="stem must be one of"):
        create_model("resnet9", stem="patchy")
    with pytest.raises(ValueError, match="shortcut='projection'"):
        create_model("resnet20", stem="whitening")


def test_init_fits_the_layer_through_the_models_normalisation():
    images = np.clip(_smooth_images(32, 32) * 40 + 120, 0, 255)
    model = create_model("resnet20", stem="whitening", shortcut="projection",
                         input_shape=(32, 32, 3))
    assert init_patch_whitening(model, images)
    normalised = keras.Model(model.inputs, model.get_layer("preprocess").output).predict(
        images, verbose=0)
    np.testing.assert_allclose(whitening_layer(model).kernel.numpy(),
                               whitening_kernel(np.asarray(normalised)), rtol=1e-4, atol=1e-4)
    assert not init_patch_whitening(create_model("resnet20"), images)


def test_sample_spreads_over_a_split_stored_class_by_class():
    import tensorflow as tf

    from keras_resnet.models.whitening import sample_images

    labels = np.repeat(np.arange(10), 100)                  # 1,000 images, class by class
    images = np.broadcast_to(labels[:, None, None, None], (1000, 4, 4, 3)).astype(np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(64)
    sample = sample_images(dataset, 1000, count=250)
    assert len(sample) == 250
    np.testing.assert_array_equal(np.bincount(sample[:, 0, 0, 0], minlength=10), [25] * 10)
    with pytest.raises(ValueError, match="dataset is empty"):
        sample_images(dataset.take(0), 0)


def test_freezing_for_fine_tuning_keeps_the_whitening_frozen():
    from keras_resnet.training.freezing import freeze

    model = create_model("resnet9", stem="whitening", input_shape=(32, 32, 3))
    freeze(model, "none")
    assert not model.get_layer(WHITENING_LAYER).trainable
    assert model.get_layer("stem_bn").trainable


def test_fit_fits_the_stem_to_the_data_and_training_leaves_it_alone(tmp_path):
    from keras_resnet.training.fit import fit, load_training_data

    eps = 0.01                          # model.whitening_eps, 20x the default

    # Half width and 3 epochs keep it short: 4-epoch runs of this setup (seeds 0 and 1, a 2-core
    # AVX2 CPU) were at 77-82% after their second epoch and 92-94% after the fourth.
    overrides = ["data.spec=shapes:classes=4,train=1600,val=200", "epochs=3", "batch_size=32",
                 "optimizer.lr=0.05", "data.augment=none", "tensorboard=false", "verbose=0",
                 "model.stem=whitening", "model.shortcut=projection",
                 "model.width_multiplier=0.5", f"model.whitening_eps={eps}"]
    result = fit(None, output=tmp_path / "run", overrides=overrides)
    assert result.metrics["val_accuracy"] >= 0.5          # chance is 0.25
    saved = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    kernel = whitening_layer(saved).kernel.numpy()
    assert not whitening_layer(saved).trainable
    # The kernel is the whitening of the training images (the same sample fit took) ...
    from keras_resnet.models.whitening import sample_images

    data = load_training_data(result.config)
    reference = create_model("resnet20", stem="whitening", shortcut="projection",
                             input_shape=data.image_shape, num_classes=4)
    sample = sample_images(data.dataset("train", training=False), data.num_examples["train"])
    init_patch_whitening(reference, sample, eps)
    # Eigenvectors are unique only up to sign (and rotation within a repeated eigenvalue), so
    # compare what the filters compute: sum_k w_k w_k^T = 2 (covariance + eps)^-1. (fit ran
    # the model's normalisation in bfloat16, this reference in float32: hence 2%.)
    def gram(k):
        flat = k.reshape(12, 24).astype(np.float64)
        return flat @ flat.T

    np.testing.assert_allclose(gram(kernel), gram(whitening_layer(reference).kernel.numpy()),
                               rtol=0.02, atol=0.02)
    init_patch_whitening(reference, sample)           # the default eps: not what fit used
    assert not np.allclose(gram(kernel), gram(whitening_layer(reference).kernel.numpy()),
                           rtol=0.1)
    assert not np.allclose(gram(kernel), gram(whitening_layer(create_model(
        "resnet20", stem="whitening", shortcut="projection", input_shape=(32, 32, 3)
    )).kernel.numpy()), rtol=0.1)   # a random (unfitted) kernel would not match
