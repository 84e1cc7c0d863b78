"""``optimizer.name: muon``: Muon steps for convolution filters, SGD for every other weight."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from keras_resnet.training import config as C
from keras_resnet.training.muon import ConvMuon, orthogonalise
from keras_resnet.training.optimizers import build_optimizer


def _polar(matrix):
    """``U @ V^T`` from the SVD: the exact semi-orthogonal factor Muon approximates."""
    u, _, vt = np.linalg.svd(matrix, full_matrices=False)
    return u @ vt


@pytest.mark.parametrize("shape", [(64, 200), (200, 64)])
def test_orthogonalise_pushes_singular_values_towards_one(shape):
    rng = np.random.default_rng(0)
    u, _, vt = np.linalg.svd(rng.normal(size=shape), full_matrices=False)
    # Singular values spread over two orders of magnitude.
    matrix = ((u * np.geomspace(0.1, 10, min(shape))) @ vt).astype("float32")
    result = np.asarray(orthogonalise(keras.ops.convert_to_tensor(matrix), 5))
    singular = np.linalg.svd(result, compute_uv=False)
    assert result.shape == shape
    assert singular.min() > 0.6 and singular.max() < 1.3
    assert np.sum(result * (u @ vt)) / np.linalg.norm(result) / np.linalg.norm(u @ vt) > 0.95


@pytest.mark.parametrize("shape", [(27, 16), (16, 27)])
def test_orthogonalise_matches_keras_muon(shape):
    """The iteration is written out only because Keras's is a method of its optimizer."""
    matrix = np.random.default_rng(2).normal(size=shape).astype("float32")
    ours = np.asarray(orthogonalise(keras.ops.convert_to_tensor(matrix), 5))
    theirs = np.asarray(keras.optimizers.Muon().zeropower_via_newtonschulz5(
        keras.ops.convert_to_tensor(matrix), 5))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def _small_model():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


def test_one_step_orthogonalises_the_filters_and_is_plain_sgd_elsewhere():
    rng = np.random.default_rng(1)
    model = _small_model()
    variables = model.trainable_variables
    start = [np.asarray(v).copy() for v in variables]
    grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
    lr, muon_lr, momentum = 0.1, 0.05, 0.6
    section = dict(C.defaults()["optimizer"], name="muon", lr=lr, muon_lr=muon_lr,
                   muon_momentum=momentum, momentum=0.85, weight_decay=0.5,
                   decay_norm_and_bias=True)
    optimizer = build_optimizer(section, lr)
    assert isinstance(optimizer, ConvMuon)
    optimizer.apply_gradients(zip(grads, variables))
    # The filters' momentum is part of the optimizer's state, so checkpoints and resume keep it.
    assert [v.shape for v in optimizer.variables if "muon_momentum" in v.path] \
        == [model.get_layer("conv").kernel.shape]

    # The convolution kernel: rescaled to norm sqrt(8) (not decayed), then moved by muon_lr
    # along (about) the polar factor of the Nesterov direction g + m * (m * 0 + g).
    kernel = model.get_layer("conv").kernel
    index = [v.path for v in variables].index(kernel.path)
    rescaled = start[index] * math.sqrt(8) / np.linalg.norm(start[index])
    step = ((rescaled - np.asarray(kernel)) / muon_lr).reshape(-1, 8)
    direction = (grads[index] * (1 + momentum)).reshape(-1, 8)
    singular = np.linalg.svd(step, compute_uv=False)
    assert 0.5 < singular.min() and singular.max() < 1.3
    polar = _polar(direction)
    assert np.sum(step * polar) / (np.linalg.norm(step) * np.linalg.norm(polar)) > 0.9

    # Every other weight: exactly what keras.optimizers.SGD does with the same settings.
    reference_model = _small_model()
    reference = keras.optimizers.SGD(learning_rate=lr, momentum=0.85, nesterov=True,
                                     weight_decay=0.5)
    for v, value in zip(reference_model.trainable_variables, start):
        v.assign(value)
    reference.apply_gradients(zip(grads, reference_model.trainable_variables))
    for v, expected in zip(variables, reference_model.trainable_variables):
        if v.path != kernel.path:
            np.testing.assert_allclose(np.asarray(v), np.asarray(expected), rtol=1e-6,
                                       atol=1e-7, err_msg=v.path)


def test_filters_keep_norm_sqrt_filters_whatever_the_decay():
    model = _small_model()
    kernel = model.get_layer("conv").kernel
    kernel.assign(np.full(kernel.shape, 3.0, "float32"))
    section = dict(C.defaults()["optimizer"], name="muon", weight_decay=0.9)
    optimizer = build_optimizer(section, 0.1)
    zero = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    for _ in range(3):
        optimizer.apply_gradients(zip(zero, model.trainable_variables))
    assert np.linalg.norm(np.asarray(kernel)) == pytest.approx(math.sqrt(8), rel=1e-5)


def test_backup_weights_restore_the_filters_momentum(tmp_path):
    """What ``BackupAndRestore`` does on a resume: ``save_weights`` after training, then
    ``load_weights`` into a fresh compiled model whose optimizer ``fit`` has built. The Muon buffers must come back,
    or a resumed run would restart the filters' momentum from zero."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 6, 6, 3)).astype("float32")
    y = rng.integers(0, 2, 16)
    section = dict(C.defaults()["optimizer"], name="muon")

    def compiled():
        model = _small_model()
        model.compile(optimizer=build_optimizer(section, 0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    trained = compiled()
    trained.fit(x, y, batch_size=8, epochs=1, verbose=0)
    trained.save_weights(tmp_path / "latest.weights.h5")

    def buffers(model):
        return [np.asarray(v) for v in model.optimizer.variables if "muon_momentum" in v.path]

    saved = buffers(trained)
    assert len(saved) == 1 and np.abs(saved[0]).sum() > 0
    resumed = compiled()
    resumed.optimizer.build(resumed.trainable_variables)   # fit builds it before the callbacks
    resumed.load_weights(tmp_path / "latest.weights.h5")
    assert int(resumed.optimizer.iterations) == 2
    restored = buffers(resumed)
    assert len(restored) == 1
    np.testing.assert_array_equal(restored[0], saved[0])


def test_muon_config_reaches_the_optimizer_and_round_trips():
    config = C.resolve_config(None, ["optimizer.name=muon", "optimizer.lr=0.5",
                                     "optimizer.muon_lr=0.1", "optimizer.muon_momentum=0.7",
                                     "optimizer.muon_ns_steps=3"])
    optimizer = build_optimizer(config["optimizer"], 0.5)
    assert optimizer.muon_lr_ratio == pytest.approx(0.2)
    assert (optimizer.muon_momentum, optimizer.ns_steps) == (0.7, 3)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, ConvMuon) and restored.get_config() == optimizer.get_config()
    with pytest.raises(C.ConfigError, match="optimizer.nesterov: needs optimizer.momentum"):
        C.resolve_config(None, ["optimizer.name=muon", "optimizer.momentum=0"])
    with pytest.raises(C.ConfigError, match="optimizer.muon_ns_steps"):
        C.resolve_config(None, ["optimizer.name=muon", "optimizer.muon_ns_steps=0"])


def test_fit_with_muon_learns_shapes(tmp_path):
    """test_fit's LEARN run, with Muon for the filters, 6 epochs instead of 8 and the suite's
    small ResNet-9 instead of ResNet-20 (15 s against 63 s on 2 AVX512-BF16 cores; 97.5%)."""
    from conftest import SMALL_MODEL
    from test_fit import LEARN

    from keras_resnet.training.fit import fit

    muon = [*LEARN, *SMALL_MODEL, "optimizer.name=muon", "epochs=6"]
    result = fit(None, output=tmp_path / "run", overrides=muon)
    assert result.stopped == "completed"
    assert result.metrics["val_accuracy"] >= 0.7          # chance is 0.25
