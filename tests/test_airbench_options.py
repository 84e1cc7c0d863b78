"""airbench's training choices as options: BatchNorm without learned scales, identity-initialised
plain convs, a higher learning rate for BatchNorm offsets, Lookahead, and PyTorch's default
initialisation for its network."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_resnet.models import create_model
from keras_resnet.training.callbacks import Lookahead
from keras_resnet.training.optimizers import scale_bn_bias_rates


def _batchnorms(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_without_bn_scales_only_zero_initialised_branch_ends_keep_a_scale():
    kwargs = dict(num_classes=10, input_shape=(32, 32, 3), zero_init_residual=True)
    learned = create_model("resnet9", **kwargs)
    fixed = create_model("resnet9", bn_scale=False, **kwargs)
    kept = {bn.name for bn in _batchnorms(fixed) if bn.scale}
    # ResNet-9 has two residual blocks; each ends in a BN that starts at zero.
    assert kept == {"stage1_block1_bn2", "stage3_block1_bn2"}
    assert kept == {bn.name for bn in _batchnorms(learned)
                    if not np.any(keras.ops.convert_to_numpy(bn.gamma))}
    dropped = sum(bn.gamma.shape[0] for bn in _batchnorms(learned) if bn.name not in kept)
    assert learned.count_params() - fixed.count_params() == dropped > 0


def _kernels(model):
    """(name, kernel) of every trained conv and dense layer."""
    return [(layer.name, keras.ops.convert_to_numpy(layer.kernel)) for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.trainable]


def test_airbench94_starts_from_pytorchs_default_initialisation():
    keras.utils.set_random_seed(0)
    kernels = _kernels(create_model("airbench94"))
    assert len(kernels) == 7                # six 3x3 convs and the classifier
    for name, kernel in kernels:
        bound = 1.0 / np.sqrt(np.prod(kernel.shape[:-1]))     # uniform in +-1/sqrt(fan_in)
        assert np.abs(kernel).max() <= bound * (1 + 1e-6), name
        assert abs(kernel.std() / (bound / np.sqrt(3)) - 1) < 0.1, name
    # Each layer draws its own weights, even layers of the same shape.
    same_shape = [k for n, k in kernels if k.shape == (3, 3, 256, 256)]
    assert len(same_shape) == 3 and not np.allclose(same_shape[0], same_shape[1])
    # The other zoo entries keep He normal for convs.
    keras.utils.set_random_seed(0)
    for name, kernel in _kernels(create_model("resnet20")):
        if name != "predictions":
            he_std = np.sqrt(2.0 / np.prod(kernel.shape[:-1]))
            assert abs(kernel.std() / he_std - 1) < 0.2, name


def test_identity_init_passes_the_first_channels_through_each_plain_conv():
    model = create_model("resnet9", num_classes=10, input_shape=(32, 32, 3), identity_init=True,
                         width_multiplier=0.25)
    reference = create_model("resnet9", num_classes=10, input_shape=(32, 32, 3),
                             width_multiplier=0.25)
    entries = [layer for layer in model.layers if layer.name.endswith("_entry_conv")]
    assert [layer.name for layer in entries] == [f"stage{s}_entry_conv" for s in (1, 2, 3)]
    rng = np.random.default_rng(0)
    for conv in entries + [model.get_layer("stem_conv")]:
        channels_in, channels_out = conv.kernel.shape[2], conv.kernel.shape[3]
        n = min(channels_in, channels_out)
        inputs = rng.normal(size=(2, 8, 8, channels_in)).astype("float32")
        outputs = keras.ops.convert_to_numpy(conv(inputs))
        np.testing.assert_allclose(outputs[..., :n], inputs[..., :n], atol=1e-6)
        # The remaining filters keep their random start.
        assert np.std(keras.ops.convert_to_numpy(conv.kernel)[..., n:]) > 0.01 or n == channels_out
    # Residual branches are left alone: same shapes, random (not identity) kernels.
    branch = keras.ops.convert_to_numpy(model.get_layer("stage1_block1_conv1").kernel)
    assert not np.allclose(branch[1, 1], np.eye(branch.shape[2]))
    assert model.count_params() == reference.count_params()


def test_options_save_and_load_with_plain_keras(tmp_path):
    """Every model option of the cifar10_fast recipe survives a plain Keras save and load."""
    model = create_model("resnet9", num_classes=10, input_shape=(32, 32, 3), width_multiplier=0.25,
                         bn_scale=False, identity_init=True, zero_init_residual=True,
                         bn_momentum=0.4, pooling="max", head_scale=0.125, activation="gelu")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0),
                               atol=1e-6)
    assert loaded.get_layer("head_scale").scale == 0.125
    assert {bn.momentum for bn in _batchnorms(loaded)} == {0.4}
    assert loaded.get_layer("stage1_block1_gelu1").activation is keras.activations.gelu


@pytest.mark.parametrize("arch", ["resnet9", "resnet20", "resnet50d", "resnetv2_50"])
def test_activation_replaces_every_relu_and_nothing_else(arch):
    kwargs = dict(num_classes=10, input_shape=(32, 32, 3), width_multiplier=0.25,
                  classifier_activation=None)
    relu = create_model(arch, **kwargs)
    gelu = create_model(arch, activation="gelu", **kwargs)
    relus = [layer.name for layer in relu.layers if isinstance(layer, keras.layers.ReLU)]
    gelus = [layer.name for layer in gelu.layers if isinstance(layer, keras.layers.Activation)
             and layer.activation is keras.activations.gelu]
    assert len(relus) == len(gelus) > 0
    assert not any(isinstance(layer, keras.layers.ReLU) for layer in gelu.layers)
    # Same graph otherwise: same weights, and the ReLU model's names with "gelu" for "relu".
    assert gelu.count_params() == relu.count_params()
    assert gelus == [name.replace("relu", "gelu") for name in relus]
    # GELU, unlike ReLU, passes a little of the negative inputs: the outputs differ.
    gelu.set_weights(relu.get_weights())
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert not np.allclose(gelu.predict(images, verbose=0), relu.predict(images, verbose=0))


def test_an_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of"):
        create_model("resnet20", activation="tanh")


def _one_sgd_step(model, multiplier):
    optimizer = keras.optimizers.SGD(0.1)
    scale_bn_bias_rates(optimizer, model, multiplier)
    before = [keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables]
    grads = [keras.ops.ones_like(v) for v in model.trainable_variables]
    optimizer.apply(grads, model.trainable_variables)
    moved = {v.path: keras.ops.convert_to_numpy(v) - b
             for v, b in zip(model.trainable_variables, before)}
    return moved


def test_bn_offsets_move_by_the_multiplied_rate_and_nothing_else_does():
    model = create_model("resnet20", num_classes=10, input_shape=(32, 32, 3))
    moved = _one_sgd_step(model, 64.0)
    offsets = {bn.beta.path for bn in _batchnorms(model)}
    assert len(offsets) == 19
    for path, delta in moved.items():
        expected = -0.1 * (64.0 if path in offsets else 1.0)
        np.testing.assert_allclose(delta, expected, rtol=1e-5, err_msg=path)


def test_decayed_bn_offsets_shrink_per_step_like_every_other_weight():
    """airbench's 64x offset rate scales the gradient step, not the weight decay."""
    from keras_resnet.training.optimizers import build_optimizer

    model = create_model("airbench94", num_classes=10, input_shape=(32, 32, 3), bn_scale=False)
    offsets = {bn.beta.path for bn in _batchnorms(model)}
    assert len(offsets) == 7
    for variable in model.trainable_variables:
        variable.assign(keras.ops.ones_like(variable))
    optimizer = build_optimizer({"name": "sgd", "momentum": 0.0, "nesterov": False,
                                 "weight_decay": 0.5, "decay_norm_and_bias": True}, 0.1)
    scale_bn_bias_rates(optimizer, model, 64.0)
    optimizer.apply([keras.ops.zeros_like(v) for v in model.trainable_variables],
                    model.trainable_variables)
    # No gradient: only the decay moves the weights, by lr * weight_decay = 5% for all.
    for variable in model.trainable_variables:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), 0.95, rtol=1e-6,
                                   err_msg=variable.path)
    # The gradient step itself is still 64x for the offsets.
    grads = [keras.ops.ones_like(v) for v in model.trainable_variables]
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables}
    optimizer.apply(grads, model.trainable_variables)
    for variable in model.trainable_variables:
        step = before[variable.path] * 0.95 - keras.ops.convert_to_numpy(variable)
        np.testing.assert_allclose(step, 0.1 * (64.0 if variable.path in offsets else 1.0),
                                   rtol=1e-4, err_msg=variable.path)


def test_without_stem_bn_the_whitened_patches_go_straight_to_the_activation(tmp_path):
    kwargs = dict(num_classes=10, input_shape=(32, 32, 3), activation="gelu", bn_scale=False)
    with_bn = create_model("airbench94", **kwargs)
    without = create_model("airbench94", stem_bn=False, **kwargs)
    names = [layer.name for layer in without.layers]
    assert "stem_bn" in [layer.name for layer in with_bn.layers] and "stem_bn" not in names
    assert names[names.index("stem_whiten") + 1] == "stem_gelu"
    # All the stem's BN held: 24 offsets and two moving statistics per channel.
    assert with_bn.count_params() - without.count_params() == 3 * 24
    path = tmp_path / "m.keras"
    without.save(path)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(keras.models.load_model(path).predict(images, verbose=0),
                               without.predict(images, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="applies to the whitening stem only"):
        create_model("resnet20", stem_bn=False)


def _tiny_model():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(keras.layers.BatchNormalization()(inputs))
    return keras.Model(inputs, outputs)


def test_lookahead_sync_moves_the_slow_copy_and_restarts_from_it():
    model = _tiny_model()
    lookahead = Lookahead(every=2, decay=0.5)
    lookahead.set_model(model)
    lookahead.set_params({"steps": 4, "epochs": 1})
    lookahead.on_epoch_begin(0)
    start = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
    fast = [s + 1.0 for s in start]
    for variable, value in zip(model.weights, fast):
        variable.assign(value)
    lookahead.sync(0.5)
    for variable, s in zip(model.weights, start):
        # Halfway between the slow start and the fast weights; BatchNorm statistics included.
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), s + 0.5, atol=1e-6)
    # The pull-back grows as (step / total)^3: none at step 0, the full decay at the end.
    syncs = []
    lookahead.sync = syncs.append
    for batch in range(4):
        lookahead.on_train_batch_end(batch)
    assert syncs == pytest.approx([0.5 * (2 / 4) ** 3, 0.5 * 1.0])


def test_fit_with_lookahead_saves_the_slow_weights_it_ended_on(tmp_path):
    from keras_resnet.training.fit import fit

    ended_on = []

    class Capture(keras.callbacks.Callback):
        def on_train_end(self, logs=None):   # runs after Lookahead's final copy-back
            ended_on.extend(keras.ops.convert_to_numpy(v).copy() for v in self.model.weights)

    # The built-in shapes data (6 classes), airbench's options all on.
    result = fit({"arch": "resnet9", "epochs": 3, "verbose": 0, "tensorboard": False,
                  "model": {"width_multiplier": 0.25, "stem": "whitening", "bn_scale": False,
                            "identity_init": True},
                  "optimizer": {"lookahead_every": 8, "bn_bias_lr_multiplier": 64.0}},
                 output=tmp_path / "run", callbacks=[Capture()])
    assert result.metrics["averaged_weights"] == "lookahead"
    assert result.metrics["val_accuracy"] > 0.6   # chance: 0.17
    saved = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert len(saved.weights) == len(ended_on)
    for variable, value in zip(saved.weights, ended_on):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), value, atol=1e-6)


def test_a_lookahead_run_resumes_with_a_fresh_slow_copy(tmp_path):
    from keras_resnet.training.fit import fit

    config = {"arch": "resnet9", "epochs": 1, "batch_size": 32, "verbose": 0,
              "tensorboard": False, "model": {"width_multiplier": 0.25},
              "data": {"spec": "shapes:classes=3,train=192,val=64,size=32"},
              "optimizer": {"lookahead_every": 2}}
    first = fit(config, output=tmp_path / "run")
    second = fit(dict(config, epochs=2), output=tmp_path / "run", resume=True)
    assert first.metrics["epochs"] == 1
    assert second.metrics["epochs"] == 2 and second.metrics["resumed_from_epoch"] == 1
    assert second.metrics["averaged_weights"] == "lookahead"
    assert np.isfinite(second.metrics["val_loss"])


@pytest.mark.parametrize("fused", [False, True])
def test_bn_momentum_sets_how_fast_the_moving_statistics_follow(fused):
    from keras_resnet.training.fused_batchnorm import use_fused_batchnorm

    model = create_model("resnet20", num_classes=10, input_shape=(32, 32, 3), bn_momentum=0.4)
    assert {bn.momentum for bn in _batchnorms(model)} == {0.4}
    if fused:
        assert use_fused_batchnorm(model) == 19
    images = np.random.default_rng(2).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    stem = keras.Model(model.input, model.get_layer("stem_conv").output)
    batch_mean = keras.ops.convert_to_numpy(stem(images)).mean(axis=(0, 1, 2))
    model(images, training=True)
    moving = keras.ops.convert_to_numpy(model.get_layer("stem_bn").moving_mean)
    # The moving mean starts at 0: one step leaves (1 - momentum) of the batch mean.
    np.testing.assert_allclose(moving, 0.6 * batch_mean, rtol=1e-3, atol=1e-4)
