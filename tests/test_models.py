"""The model zoo: exact sizes against published figures, shapes, options, serialisation."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet.models import (count_flops, count_trainable_params, create_model, list_models,
                                 model_info)
from keras_resnet.models.card import compute_card, load_card

# torchvision's figures (trainable parameters for 1000 classes; GFLOPs = multiply-adds @224).
TORCHVISION = {
    "resnet18": (11_689_512, 1.81),
    "resnet34": (21_797_672, 3.66),
    "resnet50": (25_557_032, 4.09),
    "resnet101": (44_549_160, 7.80),
    "resnet152": (60_192_808, 11.51),
}
# He et al. 2016 CIFAR ResNets, option A, 10 classes.
CIFAR_OPTION_A = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586,
                  "resnet56": 853_018, "resnet110": 1_727_962}
OPTION_B_EXTRA = 2_752
# Page's ResNet-9 (DAWNBench): 8 convs of 64-128-128-128-256-512-512-512 filters, BN, a
# 512 -> 10 classifier: 6,563,520 conv + 4,480 BN + 5,130 dense weights.
RESNET9_PARAMS = 6_573_130
# timm's resnet50d and resnetv2_50 (25,576,264 and 25,549,352 parameters).
TIMM = {"resnet50d": 25_576_264, "resnetv2_50": 25_549_352}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_imagenet_resnets_match_torchvision(name):
    params, gflops = TORCHVISION[name]
    info = model_info(name, 224)
    assert info["trainable_params"] == params
    assert info["gflops"] == pytest.approx(gflops, abs=0.006)


@pytest.mark.parametrize("name", list(CIFAR_OPTION_A))
def test_cifar_resnets_match_he_et_al(name):
    model = create_model(name)
    assert model.output.shape[-1] == 10
    assert count_trainable_params(model) == CIFAR_OPTION_A[name]
    option_b = create_model(name, shortcut="projection")
    assert count_trainable_params(option_b) == CIFAR_OPTION_A[name] + OPTION_B_EXTRA


@pytest.mark.parametrize("name", list(TIMM))
def test_resnet_d_and_preactivation_match_timm(name):
    assert model_info(name, 224)["trainable_params"] == TIMM[name]


def test_resnet9_matches_page():
    model = create_model("resnet9")
    assert count_trainable_params(model) == RESNET9_PARAMS
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [64, 128, 128, 128, 256, 512, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.strides == (1, 1) for c in convs)
    pools = [l for l in model.layers if isinstance(l, keras.layers.MaxPooling2D)]
    assert [p.name for p in pools] == [f"stage{s}_entry_pool" for s in (1, 2, 3)]
    assert model_info("resnet9", 32)["depth"] == 9


# airbench94 (Jordan 2024): six 3x3 convs of 24-64, 64-64, 64-256 and 3 x 256-256 weights
# (1,967,616), BatchNorm offsets only (1,152), a learned whitening bias (24) and a bias-free
# 256 -> 10 classifier (2,560) train 1,971,352 parameters; ours has the stem BatchNorm's 24
# offsets in place of the whitening bias. airbench95 is the same at 128-384-384: convs of
# 27,648 + 147,456 + 442,368 + 3 x 1,327,104, offsets 1,792, whitening bias 24, classifier 3,840.
AIRBENCH_TRAINABLE = {"airbench94": 1_971_352, "airbench95": 4_604_440}


@pytest.mark.parametrize("name, widths", [("airbench94", (64, 256)),
                                          ("airbench95", (128, 384))])
def test_airbench_networks_match_airbench(name, widths):
    model = create_model(name, bn_scale=False)
    assert count_trainable_params(model) == AIRBENCH_TRAINABLE[name]
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    first, rest = widths
    assert [c.filters for c in convs] == [24, first, first, rest, rest, rest, rest]
    assert not any(isinstance(l, keras.layers.Add) for l in model.layers)  # no shortcuts
    # Each stage pools straight after its entry conv, before BatchNorm (airbench's order).
    names = [layer.name for layer in model.layers]  # a chain: graph order is layer order
    for s in (1, 2, 3):
        assert names.index(f"stage{s}_entry_pool") == names.index(f"stage{s}_entry_conv") + 1
    assert model_info(name, 32)["depth"] == 8
    assert _output_shape(create_model(name, include_top=False, pooling=None),
                         32) == (2, 3, 3, rest)


# airbench96 (its June 2024 revision): convs of 24-128 (27,648), 2 x 128-128 (294,912), 128-512
# (589,824) and 5 x 512-512 (11,796,480), BatchNorm offsets 3 x 128 + 6 x 512 (3,456), the
# whitening bias (24; ours: the stem BatchNorm's offsets) and a 512 -> 10 classifier (5,120).
AIRBENCH96_TRAINABLE = 12_717_464


def test_airbench96_adds_a_residual_block_per_stage_and_starts_every_conv_as_identity():
    model = create_model("airbench96", bn_scale=False, identity_init=True, activation="gelu")
    assert count_trainable_params(model) == AIRBENCH96_TRAINABLE
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [24, 128, 128, 128, 512, 512, 512, 512, 512, 512]
    adds = [l for l in model.layers if isinstance(l, keras.layers.Add)]
    assert [a.name for a in adds] == [f"stage{s}_block1_add" for s in (1, 2, 3)]
    # The shortcut is added before the block's last activation (airbench96's revised block).
    assert model.get_layer("stage2_block1_out").input.name == adds[1].output.name
    # Every 3x3 conv, inside the residual branches too, starts by copying its input channels.
    for conv in convs[1:]:
        kernel = keras.ops.convert_to_numpy(conv.kernel)
        n = min(kernel.shape[2], kernel.shape[3])
        assert np.array_equal(kernel[1, 1, range(n), range(n)], np.ones(n))
        assert not kernel[0, 0, range(n), range(n)].any()
    assert model_info("airbench96", 32)["depth"] == 11
    # Without identity_init the residual convs keep their random start, as in the other nets.
    plain = create_model("airbench96")
    kernel = keras.ops.convert_to_numpy(plain.get_layer("stage1_block1_conv1").kernel)
    assert not np.array_equal(kernel[1, 1, range(128), range(128)], np.ones(128))


@pytest.mark.parametrize("ours, theirs, params", [
    ("keras_resnet50", keras.applications.ResNet50, 25_636_712),
    ("keras_resnet50v2", keras.applications.ResNet50V2, 25_613_800),
])
def test_keras_application_layouts_match_exactly(ours, theirs, params):
    model = create_model(ours)
    assert model.count_params() == params
    reference = theirs(weights=None)
    assert reference.count_params() == params
    ours_shapes = sorted(tuple(w.shape) for w in model.weights)
    theirs_shapes = sorted(tuple(w.shape) for w in reference.weights)
    assert ours_shapes == theirs_shapes


def test_card_matches_the_real_models():
    """zoo list reads a stored card; every figure on it is recomputed here."""
    assert load_card() == compute_card()



def _output_shape(model, size):
    return tuple(model.compute_output_spec(keras.KerasTensor((2, size, size, 3))).shape)


@pytest.mark.parametrize("name", list_models())
def test_output_shapes_with_and_without_top(name):
    spec = keras_resnet.get_spec(name)
    classes = spec.get("default_classes", 1000)
    channels = spec["widths"][-1] * (4 if spec["block"] == "bottleneck" else 1)
    downsampling_stages = len(spec["layers"]) - (spec.get("stage_entry") != "conv_pool")
    total_stride = (4 if spec["stem"] in ("imagenet", "deep") else 1) * 2 ** downsampling_stages
    with keras.StatelessScope():  # shapes only: skip initialising the weights
        without_top = create_model(name, include_top=False, pooling=None)
    for size in (32, 224):
        # model_info builds the full model (with top) at this fixed size.
        assert model_info(name, size)["num_classes"] == classes
        side = -(-size // total_stride)  # ceil: every downsampling rounds up
        if spec["stem"] == "whitening":
            # A 2x2 "valid" conv takes a pixel off, and the 2x2 max pools round down.
            side = (size - 1) // total_stride
        assert _output_shape(without_top, size) == (2, side, side, channels)


def test_options_change_the_graph_as_documented():
    model = create_model("resnet20", num_classes=7, input_shape=(32, 32, 3), dropout=0.2,
                         drop_path_rate=0.1, zero_init_residual=True, pooling="max")
    assert model.output.shape == (None, 7)
    assert model.get_layer("head_dropout").rate == 0.2
    assert isinstance(model.get_layer("head_pool"), keras.layers.GlobalMaxPooling2D)
    drop_rates = [l.rate for l in model.layers if l.name.endswith("_drop_path")]
    # Linear in the block index: 0 for the first block (no layer), 0.1 for the last.
    assert len(drop_rates) == 8 and drop_rates[-1] == pytest.approx(0.1)
    assert drop_rates == sorted(drop_rates)
    last_bns = [l for l in model.layers if l.name.endswith("_bn2")]
    assert last_bns and all(np.all(l.gamma.numpy() == 0) for l in last_bns)
    # Zero-initialised branches: at init every block is the identity plus shortcut.
    half = create_model("resnet20", width_multiplier=0.5)
    assert half.get_layer("stage3_block1_conv1").filters == 32
    pooled = create_model("resnet18", include_top=False, pooling="avg")
    assert pooled.output.shape == (None, 512)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "resnet19"}, "choose one of"),
    ({"name": "resnet20", "pooling": "median"}, "pooling must be one of"),
    ({"name": "resnet20", "num_classes": 0}, "num_classes"),
    ({"name": "resnet20", "input_shape": (32, 32, 1)}, "input_shape"),
    ({"name": "resnet20", "dropout": 1.5}, "dropout"),
    ({"name": "resnet20", "shortcut": "magic"}, "shortcut must be one of"),
    ({"name": "resnet20", "std": (1, 1)}, "3 values"),
])
def test_bad_options_raise_value_errors_naming_the_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model(**kwargs)


def test_preprocessing_is_inside_the_model():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    model = create_model("resnet20", mean=mean, std=std)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    normalised = keras.Model(model.input, model.get_layer("preprocess").output)(pixels)
    expected = (pixels / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(normalised, expected, rtol=1e-5, atol=1e-5)


def test_config_round_trip_gives_the_same_model():
    model = create_model("resnet20", num_classes=5, dropout=0.1)
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    assert clone.get_config() == model.get_config()
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), clone.predict(x, verbose=0))


def test_saved_model_loads_in_plain_keras_without_the_package(tmp_path):
    model = create_model("resnet20", num_classes=4, drop_path_rate=0.1, input_shape=(32, 32, 3))
    # Non-trivial BatchNorm statistics, so a load that lost them would show.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.1, "float32"))
    x = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    path = keras_resnet.save_model(model, tmp_path / "m.keras", {"class_names": list("abcd")})
    assert keras_resnet.read_metadata(path)["class_names"] == ["a", "b", "c", "d"]
    script = textwrap.dedent(f"""
        import sys, numpy as np, keras
        model = keras.models.load_model({str(path)!r})  # safe_mode=True by default
        y = model.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)
        np.testing.assert_array_equal(y, np.load({str(tmp_path / 'y.npy')!r}))
        assert "keras_resnet" not in sys.modules
        print("identical")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "identical" in result.stdout


def test_a_model_saved_with_a_list_of_one_input_loads_taking_a_tensor(tmp_path, recwarn):
    """Early versions saved ``[images]`` as the input; loading gives a one-input model back,
    with the same weights and outputs, that takes a tensor without Keras's structure warning."""
    images = keras.Input((32, 32, 3), name="images")
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(images))
    old = keras.Model([images], outputs, name="old")
    path = keras_resnet.save_model(old, tmp_path / "old.keras")
    assert isinstance(keras.models.load_model(path).input, list)  # as plain Keras loads it
    model = keras_resnet.load_model(path)
    assert not isinstance(model.input, list) and model.name == "old"
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    recwarn.clear()
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(old([x])), rtol=1e-6)
    assert not [w for w in recwarn if "structure" in str(w.message)]


@pytest.mark.parametrize("application, preprocess", [
    (keras.applications.ResNet50, keras.applications.resnet.preprocess_input),
    (keras.applications.ResNet50V2, keras.applications.resnet_v2.preprocess_input),
])
def test_from_keras_application_reproduces_the_outputs(application, preprocess):
    rng = np.random.default_rng(3)
    reference = application(weights=None, input_shape=(64, 64, 3), classes=10)
    for layer in reference.layers:  # random BN statistics: a mapping error cannot hide
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))
    ours = keras_resnet.from_keras_application(reference)
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = reference.predict(preprocess(x.copy()), verbose=0)
    np.testing.assert_allclose(ours.predict(x, verbose=0), expected, atol=1e-5)
    assert ours.get_layer("stage1_block1_conv1").get_weights()[0].shape == (1, 1, 64, 64)


def test_logits_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = create_model("resnet20", classifier_activation=None)
        assert model.get_layer("stage1_block1_conv1").compute_dtype == "bfloat16"
        y = model(np.zeros((1, 32, 32, 3), "float32"))
        assert y.dtype == "float32"
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_count_flops_needs_a_fixed_size():
    with pytest.raises(ValueError, match="fixed input size"):
        count_flops(create_model("resnet20"))


def test_list_models_holds_the_required_entries():
    required = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet50d",
                "resnet101d", "resnetv2_50", "resnetv2_101", "resnetv2_152", "resnet20",
                "resnet32", "resnet44", "resnet56", "resnet110"}
    assert required <= set(list_models())
    assert json.dumps(list_models())
