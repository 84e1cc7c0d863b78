"""Fine-tuning building blocks: SOURCE resolution, new heads, freezing by depth (frozen BatchNorm
in inference mode), per-depth learning rates."""
from __future__ import annotations

import numpy as np
import pytest

import keras

from keras_resnet.models import create_model, save_model
from keras_resnet.training import freezing
from keras_resnet.training.freezing import apply_lr_multipliers, backbone_variables
from keras_resnet.training.sources import (
    parse_application_spec, prepare_model, rebuild, replace_head, resolve_source,
)


def _images(n=16, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3)).astype("float32"), rng.integers(0, 3, n)


@pytest.fixture(scope="module")
def resnet20():
    keras.utils.set_random_seed(0)
    return create_model("resnet20", num_classes=10, input_shape=(32, 32, 3))


@pytest.fixture(scope="module")
def saved_resnet20(resnet20, tmp_path_factory):
    path = tmp_path_factory.mktemp("source") / "model.keras"
    names = [f"class{i}" for i in range(10)]
    save_model(resnet20, path, {"class_names": names, "arch": "resnet20",
                                "image_size": [32, 32], "recipe": {"epochs": 3}})
    return path


# -- freezing ------------------------------------------------------------------------------

def test_parts_and_freeze_depths(resnet20):
    assert freezing.backbone_parts(resnet20) == ["stem", "stage1", "stage2", "stage3"]
    assert freezing.part_of("stage2_block1_conv1") == "stage2"
    assert freezing.part_of("predictions") == "head"
    assert freezing.part_of("preprocess") is None
    assert freezing.frozen_parts(resnet20, "none") == []
    assert freezing.frozen_parts(resnet20, "stage2") == ["stem", "stage1", "stage2"]
    assert freezing.frozen_parts(resnet20, "backbone") == ["stem", "stage1", "stage2", "stage3"]
    with pytest.raises(ValueError, match="3 stages"):
        freezing.frozen_parts(resnet20, "stage4")
    with pytest.raises(ValueError, match="freeze must be one of"):
        freezing.frozen_parts(resnet20, "stage9")

    model = replace_head(resnet20, 3)
    freezing.freeze(model, "stage1")
    assert not model.get_layer("stem_conv").trainable
    assert not model.get_layer("stage1_block3_bn2").trainable
    assert model.get_layer("stage2_block1_conv1").trainable
    assert model.get_layer("predictions").trainable
    trainable = {v.path.split("/")[0] for v in model.trainable_variables}
    assert not any(name.startswith(("stem_", "stage1_")) for name in trainable)
    freezing.freeze(model, "none")
    assert len(model.trainable_variables) == len(resnet20.trainable_variables)


def test_preact_models_have_a_post_part():
    model = create_model("resnetv2_50", num_classes=2, input_shape=(32, 32, 3))
    assert freezing.backbone_parts(model)[-2:] == ["stage4", "post"]
    assert freezing.frozen_parts(model, "stage4")[-1] == "stage4"
    assert freezing.frozen_parts(model, "backbone")[-1] == "post"


def test_frozen_backbone_keeps_weights_and_bn_statistics(resnet20):
    """Head phase: nothing of the backbone moves, BatchNorm statistics included, and frozen
    BatchNorm normalises with its moving statistics even in training mode."""
    keras.utils.set_random_seed(1)
    model = replace_head(resnet20, 3)
    freezing.freeze(model, "backbone")
    before = [w.numpy().copy() for w in backbone_variables(model)]
    head_before = model.get_layer("predictions").kernel.numpy().copy()
    x, y = _images()
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = [w.numpy() for w in backbone_variables(model)]
    assert len(before) == len(after) > 60
    assert all(np.array_equal(b, a) for b, a in zip(before, after))
    assert not np.allclose(head_before, model.get_layer("predictions").kernel.numpy())
    features = keras.Model(model.input, model.get_layer("head_pool").output)
    np.testing.assert_allclose(features(x, training=True), features(x, training=False),
                               rtol=1e-5, atol=1e-5)

    # The same check fails for a part that is not frozen: its statistics follow the new data.
    freezing.freeze(model, "stage1")
    stats = model.get_layer("stage3_block1_bn1").moving_mean.numpy().copy()
    stem_stats = model.get_layer("stem_bn").moving_mean.numpy().copy()
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not np.allclose(stats, model.get_layer("stage3_block1_bn1").moving_mean.numpy())
    assert np.array_equal(stem_stats, model.get_layer("stem_bn").moving_mean.numpy())
    freezing.freeze(model, "none")


# -- new head, rebuilds ---------------------------------------------------------------------

def test_replace_head_shares_the_backbone(resnet20):
    model = replace_head(resnet20, 4, dropout=0.2)
    assert model.output_shape == (None, 4)
    assert [l.name for l in model.layers[-4:]] == ["head_pool", "head_dropout", "predictions",
                                                   "probabilities"]
    assert model.get_layer("stage3_block3_conv2") is resnet20.get_layer("stage3_block3_conv2")
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    probabilities = np.asarray(model(_images(4)[0]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="positive integer"):
        replace_head(resnet20, 0)


def test_rebuild_changes_input_size_and_precision_keeping_weights(resnet20):
    x = _images(4)[0]
    same = rebuild(resnet20)
    np.testing.assert_allclose(same.predict(x, verbose=0), resnet20.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    larger = rebuild(resnet20, input_shape=(48, 48, 3))
    assert larger.input_shape == (None, 48, 48, 3)
    np.testing.assert_array_equal(larger.get_layer("stem_conv").kernel.numpy(),
                                  resnet20.get_layer("stem_conv").kernel.numpy())
    bf16 = rebuild(resnet20, dtype_policy="mixed_bfloat16")
    assert bf16.get_layer("stage1_block1_conv1").compute_dtype == "bfloat16"
    assert bf16.get_layer("predictions").compute_dtype == "float32"
    np.testing.assert_allclose(bf16.predict(x, verbose=0), resnet20.predict(x, verbose=0),
                               atol=0.05)


def test_rebuild_keeps_a_model_whose_input_is_a_list_of_one(resnet20):
    # Built on ``model.inputs``, as the fine-tuning head phase's saved model reloads; its
    # rebuild to a bfloat16 policy (what fine-tuning does where precision auto is bfloat16)
    # once failed on the input's structure.
    listed = keras.Model(resnet20.inputs, resnet20.outputs)
    assert isinstance(listed.input, list)
    bf16 = rebuild(listed, dtype_policy="mixed_bfloat16")
    assert bf16.get_layer("stage1_block1_conv1").compute_dtype == "bfloat16"
    x = _images(4)[0]
    np.testing.assert_allclose(bf16.predict(x, verbose=0), resnet20.predict(x, verbose=0),
                               atol=0.05)


# -- sources --------------------------------------------------------------------------------

def test_resolve_keras_file_and_run_directory(resnet20, saved_resnet20, tmp_path):
    pretrained = resolve_source(saved_resnet20)
    assert pretrained.arch == "resnet20"
    assert pretrained.class_names == [f"class{i}" for i in range(10)]
    assert pretrained.image_size == (32, 32)
    assert pretrained.recipe == {"epochs": 3}
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").symlink_to(saved_resnet20)
    assert resolve_source(run).class_names == pretrained.class_names

    model, _ = prepare_model(pretrained, 5)
    assert model.output_shape == (None, 5)
    np.testing.assert_array_equal(model.get_layer("stage2_block2_conv1").kernel.numpy(),
                                  resnet20.get_layer("stage2_block2_conv1").kernel.numpy())
    bigger, _ = prepare_model(pretrained, 5, image_size=(40, 40))
    assert bigger.input_shape == (None, 40, 40, 3)


def test_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        resolve_source(tmp_path / "missing.keras")
    with pytest.raises(FileNotFoundError, match="no best.keras or model.keras"):
        resolve_source(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"must be a \.keras file"):
        resolve_source(tmp_path / "notes.txt")
    (tmp_path / "broken.keras").write_text("not a zip")
    with pytest.raises(ValueError, match="not a zip"):
        resolve_source(tmp_path / "broken.keras")
    with pytest.raises(ValueError, match="unknown keras application 'resnet51'"):
        resolve_source("keras:resnet51")
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        resolve_source(f"keras:resnet50={tmp_path / 'w.h5'}")
    assert parse_application_spec("keras:ResNet101V2") == ("resnet101v2", "imagenet")
    assert parse_application_spec("keras:resnet50=random") == ("resnet50", None)


def test_failed_download_is_one_clear_line(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ValueError, match=r"could not download .*keras:resnet50=path/to/weights"):
        resolve_source("keras:resnet50").build((32, 32))


# -- per-depth learning rates ---------------------------------------------------------------

def test_depth_multipliers(resnet20):
    model = replace_head(resnet20, 3)
    multipliers = freezing.depth_lr_multipliers(model, 0.5)
    assert multipliers["predictions/kernel"] == 1.0
    assert multipliers["stage3_block1_conv1/kernel"] == 0.5
    assert multipliers["stage1_block1_conv1/kernel"] == 0.125
    assert multipliers["stem_conv/kernel"] == 0.0625
    with pytest.raises(ValueError, match="stage_lr_decay"):
        freezing.depth_lr_multipliers(model, 0.0)


@pytest.mark.parametrize("make_optimizer", [
    lambda lr: keras.optimizers.SGD(lr, momentum=0.9, weight_decay=0.05),
    lambda lr: keras.optimizers.AdamW(lr, weight_decay=0.05),
])
def test_lr_multipliers_equal_a_smaller_learning_rate(make_optimizer):
    """Two steps with multiplier 0.25 on one layer land exactly where a plain optimizer with a
    4x smaller rate lands for that layer, weight decay included; the other layer (an independent
    branch) trains at the full rate."""
    def train(lr, multipliers):
        keras.utils.set_random_seed(3)
        inputs = keras.Input((6,))
        outputs = keras.layers.Concatenate()([keras.layers.Dense(2, name="first")(inputs),
                                              keras.layers.Dense(1, name="second")(inputs)])
        model = keras.Model(inputs, outputs)
        optimizer = make_optimizer(lr)
        model.compile(optimizer, "mse")
        apply_lr_multipliers(optimizer, model.trainable_variables, multipliers)
        rng = np.random.default_rng(0)
        model.fit(rng.normal(size=(8, 6)), rng.normal(size=(8, 3)), batch_size=4, verbose=0,
                  shuffle=False)
        return {v.path: v.numpy() for v in model.trainable_variables}

    scaled = train(0.1, {"first/kernel": 0.25, "first/bias": 0.25})
    plain = train(0.1, {})
    slow = train(0.025, {})
    for path in ("first/kernel", "first/bias"):
        np.testing.assert_allclose(scaled[path], slow[path], rtol=1e-5, atol=1e-6)
        assert not np.allclose(scaled[path], plain[path], atol=1e-4)
    for path in ("second/kernel", "second/bias"):
        np.testing.assert_allclose(scaled[path], plain[path], rtol=1e-5, atol=1e-6)
