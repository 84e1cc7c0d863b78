"""Config schema, recipes, overrides, schedules, optimizers, precision and strategy choice:
the pieces of ``fit`` that need no training run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from keras_resnet.training import config as C


def test_default_recipe_file_lists_exactly_the_schema_defaults():
    on_disk = yaml.safe_load((C.CONFIGS_DIR / "default.yaml").read_text())
    assert C.validate(on_disk) == C.defaults()
    assert C.flatten(on_disk).keys() == C.flatten(C.defaults()).keys()


@pytest.mark.parametrize("name", C.list_recipes())
def test_every_shipped_recipe_validates(name):
    config = C.resolve_config(name)
    assert config["epochs"] >= 1 and config["arch"]


# The CIFAR-10 recipes, the benchmark runs BENCHMARKS.md quotes for them, and the keys added
# to a recipe since its run. cifar10_fast's time budget came later; on the CPU of its run its
# 22 epochs took 51 minutes, inside the 58.
MEASURED_RECIPES = [
    ("cifar10_fast", "cifar10_fast_airbench1024", {"time_budget_minutes"}),
    ("cifar10_airbench94", "cifar10_airbench94_uniform_shifts_avx2", set()),
    ("cifar10_airbench95", "cifar10_airbench95_batch512_amx", set()),
    ("cifar10_airbench95", "cifar10_airbench95_batch512_seed1_amx", set()),
    ("cifar10_airbench95", "cifar10_airbench95_batch512_seed2_amx", set()),
    ("cifar10_airbench95", "cifar10_airbench95_avx512bf16", set()),
    ("cifar10_airbench95", "cifar10_airbench95_seed1_avx512bf16", set()),
    ("cifar10_airbench95", "cifar10_airbench95_seed2_avx512bf16", set()),
    ("cifar10_airbench95", "cifar10_airbench95_fgrad_avx512bf16", set()),
    ("cifar10_airbench95", "cifar10_airbench95_seed3_avx512bf16", set()),
    ("cifar10_airbench95", "cifar10_airbench95_seed4_avx512bf16", set()),
    ("cifar10_airbench95", "cifar10_airbench95_28min_avx512bf16", {"time_budget_minutes"}),
    ("cifar10_airbench94", "cifar10_airbench94_28min_avx512bf16", {"time_budget_minutes"}),
]


@pytest.mark.parametrize("recipe, run, added_since", MEASURED_RECIPES)
def test_cifar_recipes_still_train_the_runs_their_figures_come_from(recipe, run, added_since):
    """A recipe quotes the accuracy of recorded runs, so it must still train them (the data
    path, which the benchmark passes, the log verbosity and the seed, a choice of the run and
    not of the recipe, may differ)."""
    measured = C.CONFIGS_DIR.parent / "benchmarks" / "results" / run / "config.yaml"
    shipped = C.flatten(C.resolve_config(recipe))
    recorded = C.flatten(C.resolve_config(measured))
    differences = {key: (shipped.get(key), recorded.get(key))
                   for key in shipped.keys() | recorded.keys()
                   if shipped.get(key) != recorded.get(key)}
    assert set(differences) <= {"data.spec", "verbose", "seed"} | added_since, differences


def test_model_choices_match_what_create_model_accepts():
    """The schema stays free of Keras, so it repeats the factory's choices: keep them equal."""
    from keras_resnet.models import factory

    model = C.SCHEMA["model"]
    assert model["stem"].choices == factory.STEMS
    assert model["shortcut"].choices == factory.SHORTCUTS
    assert model["pooling"].choices == factory.POOLINGS
    assert model["activation"].choices == factory.ACTIVATIONS


def test_recipe_he2016_is_the_paper_schedule_in_epochs():
    config = C.resolve_config("cifar10_he2016")
    assert config["optimizer"]["lr"] == 0.1 and config["batch_size"] == 128
    # 64k iterations over 45,000 images in batches of 128 = 182 epochs; steps at 32k and 48k.
    steps = math.ceil(45000 / 128)
    assert round(64000 / steps) == config["epochs"]
    assert [round(32000 / steps), round(48000 / steps)] == config["schedule"]["milestones"]


def test_layers_recipe_then_dict_then_overrides():
    config = C.resolve_config({"arch": "resnet56", "optimizer": {"lr": 0.3}},
                              ["optimizer.lr=0.05", "epochs=3", "schedule.milestones=[1, 2]",
                               "optimizer.weight_decay=5e-4", "data.image_size=40"])
    assert config["arch"] == "resnet56"
    assert config["optimizer"]["lr"] == 0.05            # override beats the dict
    assert config["optimizer"]["weight_decay"] == 5e-4  # "5e-4" (a YAML string) coerced
    assert config["schedule"]["milestones"] == [1.0, 2.0]
    assert config["data"]["image_size"] == [40, 40]
    assert config["optimizer"]["momentum"] == 0.9       # untouched default


def test_dotted_keys_in_a_dict_and_flat_overrides_dict():
    config = C.resolve_config({"optimizer.name": "adamw"}, {"label_smoothing": "0.1"})
    assert config["optimizer"]["name"] == "adamw" and config["label_smoothing"] == 0.1


def test_errors_are_one_line_each_and_all_reported():
    with pytest.raises(C.ConfigError) as info:
        C.resolve_config(None, ["epochs=0", "optimizer.lr=fast", "precision=half",
                                "optimizer.momentum=1.5", "schedule.name=linear"])
    errors = info.value.errors
    assert len(errors) == 5
    assert all("\n" not in e for e in errors)
    assert any(e.startswith("epochs: must be at least 1") for e in errors)
    assert any(e.startswith("optimizer.lr: expected a number, got 'fast'") for e in errors)
    assert any(e.startswith("precision: must be one of auto, float32") for e in errors)
    assert any(e.startswith("optimizer.momentum: must be at most") for e in errors)
    assert any(e.startswith("schedule.name: must be one of") for e in errors)


def test_unknown_keys_are_rejected_with_a_suggestion():
    with pytest.raises(C.ConfigError) as info:
        C.resolve_config({"optimizer": {"wd": 1e-4, "nesterow": True}, "epoch": 3, "lr": 0.1})
    assert sorted(info.value.errors) == [
        "epoch: unknown key (did you mean 'epochs'?)",
        "lr: unknown key (did you mean 'optimizer.lr'?)",
        "optimizer.nesterow: unknown key (did you mean 'optimizer.nesterov'?)",
        "optimizer.wd: unknown key",
    ]


def test_relations_between_keys_are_checked():
    with pytest.raises(C.ConfigError) as info:
        C.resolve_config(None, ["epochs=10", "schedule.name=multistep",
                                "schedule.milestones=[8, 4]", "arch=resnet21",
                                "data.augment=cifar+sharpen", "optimizer.ema=true",
                                "optimizer.lookahead_every=40"])
    text = "\n".join(info.value.errors)
    assert "optimizer.lookahead_every: choose Lookahead or optimizer.ema" in text
    assert "schedule.milestones: must be strictly increasing" in text
    assert "arch: unknown architecture 'resnet21'" in text
    assert "data.augment:" in text and "sharpen" in text


def test_airbench_options_reject_impossible_values():
    with pytest.raises(C.ConfigError) as info:
        C.resolve_config(None, ["optimizer.bn_bias_lr_multiplier=0",
                                "optimizer.lookahead_every=-1", "optimizer.lookahead_decay=1",
                                "model.bn_scale=maybe", "data.crop_padding=0",
                                "schedule.anneal=exp"])
    assert [e.split(":")[0] for e in info.value.errors] == [
        "model.bn_scale", "data.crop_padding", "optimizer.bn_bias_lr_multiplier",
        "optimizer.lookahead_every", "optimizer.lookahead_decay", "schedule.anneal"]


def test_head_options_reject_impossible_values():
    with pytest.raises(C.ConfigError) as info:
        C.resolve_config(None, ["model.pooling=min", "model.head_scale=0"])
    assert [e.split(":")[0] for e in info.value.errors] == ["model.pooling", "model.head_scale"]


def test_bad_yaml_and_missing_recipe_give_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(C.ConfigError) as info:
        C.resolve_config(bad)
    assert len(info.value.errors) == 1 and "not valid YAML" in info.value.errors[0]
    with pytest.raises(FileNotFoundError, match="no such config file or recipe"):
        C.resolve_config("no_such_recipe")


def test_a_recipe_with_a_base_states_only_what_it_changes(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        "epochs: 7\nmodel: {activation: gelu}\noptimizer: {lr: 0.5, momentum: 0.8}\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\noptimizer: {lr: 0.2}\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "grandchild.yaml").write_text("base: ../child.yaml\nepochs: 3\n")
    child = C.resolve_config(tmp_path / "child.yaml")
    assert child["optimizer"]["lr"] == 0.2 and child["optimizer"]["momentum"] == 0.8
    assert child["model"]["activation"] == "gelu" and child["epochs"] == 7
    assert "base" not in child
    grandchild = C.resolve_config(sub / "grandchild.yaml", ["optimizer.momentum=0.9"])
    assert (grandchild["epochs"], grandchild["optimizer"]["lr"],
            grandchild["optimizer"]["momentum"]) == (3, 0.2, 0.9)
    # A shipped recipe as the base, by name: only the keys the variant sets differ.
    (tmp_path / "wider.yaml").write_text(
        "base: cifar10_airbench94\narch: airbench95\noptimizer: {lr: 1.305}\n")
    wider = C.flatten(C.resolve_config(tmp_path / "wider.yaml"))
    base = C.flatten(C.resolve_config("cifar10_airbench94"))
    assert {k for k in base if base[k] != wider[k]} == {"arch", "optimizer.lr"}


def test_bad_base_recipes_give_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nepochs: 2\n")
    with pytest.raises(C.ConfigError, match="cycle") as info:
        C.resolve_config(tmp_path / "a.yaml")
    assert len(info.value.errors) == 1
    (tmp_path / "c.yaml").write_text("base: no_such_recipe\n")
    with pytest.raises(FileNotFoundError, match="no such config file or recipe"):
        C.resolve_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: [1, 2]\n")
    with pytest.raises(C.ConfigError, match="base: expected a recipe name"):
        C.resolve_config(tmp_path / "d.yaml")


def test_resume_allows_only_resumable_changes():
    saved = C.resolve_config(None, ["epochs=5"])
    assert C.resume_config(saved, None, ["epochs=8"])["epochs"] == 8
    assert C.resume_config(saved, None, {"arch": "resnet20"})["arch"] == "resnet20"  # same
    with pytest.raises(C.ConfigError, match="optimizer.lr: cannot change when resuming"):
        C.resume_config(saved, None, ["optimizer.lr=0.01"])


# -- schedules --------------------------------------------------------------------------------

def _lrs(schedule, steps):
    from keras_resnet.training.schedules import lr_at

    return np.array([lr_at(schedule, s) for s in steps])


def test_multistep_with_warmup_exact_values():
    from keras_resnet.training.schedules import build_schedule

    section = dict(C.defaults()["schedule"], name="multistep", milestones=[2.0, 3.0],
                   gamma=0.1, warmup_epochs=0.5)
    schedule = build_schedule(section, lr=0.4, epochs=4, steps_per_epoch=10)
    lrs = _lrs(schedule, [0, 4, 5, 19, 20, 29, 30, 39])
    np.testing.assert_allclose(lrs, [0.08, 0.4, 0.4, 0.4, 0.04, 0.04, 0.004, 0.004],
                               rtol=1e-5)


def test_cosine_with_warmup_and_onecycle_shapes():
    from keras_resnet.training.schedules import build_schedule

    base = C.defaults()["schedule"]
    cosine = build_schedule(dict(base, name="cosine", warmup_epochs=1.0, min_lr=0.01), 1.0,
                            epochs=3, steps_per_epoch=10)
    np.testing.assert_allclose(_lrs(cosine, [0, 5, 10, 20, 30]),
                               [0.0, 0.5, 1.0, 0.505, 0.01], atol=1e-5)
    onecycle = build_schedule(dict(base, name="onecycle", pct_start=0.25, div_factor=25,
                                   final_div_factor=1e4), 0.2, epochs=4, steps_per_epoch=10)
    np.testing.assert_allclose(_lrs(onecycle, [0, 10, 40]),
                               [0.2 / 25, 0.2, 0.2 / 25 / 1e4], rtol=1e-4)
    rising, falling = _lrs(onecycle, range(0, 11)), _lrs(onecycle, range(10, 41))
    assert np.all(np.diff(rising) > 0) and np.all(np.diff(falling) < 0)


def test_linear_onecycle_is_airbenchs_triangle_and_serialises():
    import keras

    from keras_resnet.training.schedules import LinearOneCycle, build_schedule

    base = C.defaults()["schedule"]
    # airbench: from 0.2 of the peak, up at 23% of the steps, down to 0.07 of it.
    section = dict(base, name="onecycle", anneal="linear", pct_start=0.23, div_factor=5,
                   final_div_factor=1 / (0.07 * 5))
    schedule = build_schedule(section, 1.5, epochs=10, steps_per_epoch=10)
    assert isinstance(schedule, LinearOneCycle)
    np.testing.assert_allclose(_lrs(schedule, [0, 23, 100, 200]), [0.3, 1.5, 0.105, 0.105],
                               rtol=1e-5)
    np.testing.assert_allclose(_lrs(schedule, [10, 60]),
                               [0.3 + 1.2 * 10 / 23, 1.5 - (1.5 - 0.105) * 37 / 77], rtol=1e-5)
    assert np.all(np.diff(_lrs(schedule, range(23, 101))) < 0)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    np.testing.assert_allclose(_lrs(restored, [0, 50, 99]), _lrs(schedule, [0, 50, 99]))
    # The cosine fall stays the default.
    assert not isinstance(build_schedule(dict(section, anneal="cos"), 1.5, 10, 10),
                          LinearOneCycle)


# -- optimizers -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_decoupled_weight_decay_skips_batchnorm_and_bias(name):
    import keras

    from keras_resnet.training.optimizers import build_optimizer

    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 3, use_bias=True, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, x)
    section = dict(C.defaults()["optimizer"], name=name, weight_decay=0.5)
    optimizer = build_optimizer(section, 0.1)
    variables = model.trainable_variables
    for v in variables:
        v.assign(np.ones(v.shape, "float32"))
    optimizer.apply_gradients([(np.zeros(v.shape, "float32"), v) for v in variables])
    after = {v.path: float(np.asarray(v).ravel()[0]) for v in variables}
    assert after["conv/kernel"] == pytest.approx(1 - 0.1 * 0.5)   # decayed
    assert after["conv/bias"] == 1.0 and after["bn/gamma"] == 1.0 and after["bn/beta"] == 1.0


def test_sgd_options_reach_keras():
    from keras_resnet.training.optimizers import build_optimizer

    section = dict(C.defaults()["optimizer"], momentum=0.8, nesterov=True, clip_norm=1.0,
                   ema=True, ema_momentum=0.99)
    optimizer = build_optimizer(section, 0.1)
    assert (optimizer.momentum, optimizer.nesterov, optimizer.global_clipnorm) == (0.8, True, 1.0)
    assert optimizer.use_ema and optimizer.ema_momentum == 0.99


# -- precision and distribution ----------------------------------------------------------------

def test_auto_precision_by_hardware():
    from keras_resnet.training.precision import auto_precision, cpu_flags

    assert auto_precision([(9, 0)], set())[0] == "mixed_bfloat16"
    assert auto_precision([(7, 5)], set())[0] == "mixed_float16"
    assert auto_precision([(6, 1)], set())[0] == "float32"
    assert auto_precision([], {"avx512f", "avx512_bf16"})[0] == "mixed_bfloat16"
    assert auto_precision([], {"amx_bf16"})[0] == "mixed_bfloat16"
    assert auto_precision([], {"avx2"})[0] == "float32"
    assert cpu_flags("processor: 0\nflags\t\t: fpu avx512_bf16 sse\n") == {"fpu", "avx512_bf16",
                                                                          "sse"}


def test_chief_from_tf_config():
    from keras_resnet.training.distribute import cluster_size, task_is_chief

    two = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    assert task_is_chief(two) and cluster_size(two) == 2
    assert not task_is_chief(dict(two, task={"type": "worker", "index": 1}))
    with_chief = {"cluster": {"chief": ["c:0"], "worker": ["a:1"]},
                  "task": {"type": "worker", "index": 0}}
    assert not task_is_chief(with_chief) and cluster_size(with_chief) == 2


def test_fused_batchnorm_matches_keras_batchnorm():
    import keras
    import tensorflow as tf

    from keras_resnet.models import create_model
    from keras_resnet.training.fused_batchnorm import use_fused_batchnorm

    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1)
    plain = create_model("resnet20", num_classes=4, input_shape=(16, 16, 3))
    fused = create_model("resnet20", num_classes=4, input_shape=(16, 16, 3))
    fused.set_weights(plain.get_weights())
    assert use_fused_batchnorm(fused) == 19
    x = np.random.default_rng(0).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[np.arange(8) % 4]

    def step(model):
        with tf.GradientTape() as tape:
            loss = keras.losses.categorical_crossentropy(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    for g_plain, g_fused in zip(step(plain), step(fused)):
        np.testing.assert_allclose(g_fused, g_plain, rtol=2e-3, atol=2e-5)
    for a, b in zip(plain.non_trainable_weights, fused.non_trainable_weights):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-5)
    # The saved layers are plain Keras BatchNormalization: nothing of the patch is serialised.
    assert all(type(l).__name__ == "BatchNormalization" for l in fused.layers if "bn" in l.name)
    assert fused.get_config() == plain.get_config()


def test_float32_activations_compute_bfloat16_gelus_in_float32_and_change_nothing_saved():
    import keras
    import tensorflow as tf

    from keras_resnet.models import create_model
    from keras_resnet.training.float32_activations import use_float32_activations

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(3)
        plain = create_model("airbench94", activation="gelu", input_shape=(16, 16, 3))
        fast = create_model("airbench94", activation="gelu", input_shape=(16, 16, 3))
        fast.set_weights(plain.get_weights())
        # The stem's and each conv's GELU (7); ReLU layers are never Activation layers.
        assert use_float32_activations(fast) == 7
        assert use_float32_activations(fast) == 0          # already swapped
        assert use_float32_activations(create_model("resnet20")) == 0
        x = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)), tf.float32)
        # Each swapped layer returns its input's dtype and GELU of the float32 input, rounded
        # once to bfloat16 (the plain layer rounds inside erf and the products too).
        layer = fast.get_layer("stage1_entry_gelu")
        h = tf.cast(tf.random.stateless_normal((2, 4, 4, 8), seed=(1, 2)) * 3, tf.bfloat16)
        y = layer(h)
        assert y.dtype == tf.bfloat16
        exact = keras.activations.gelu(tf.cast(h, tf.float32))
        np.testing.assert_array_equal(y.numpy(), tf.cast(exact, tf.bfloat16).numpy())
        # The whole network and its gradients agree with the bfloat16 one to bfloat16 precision.
        y_plain, y_fast = plain(x, training=False), fast(x, training=False)
        np.testing.assert_allclose(y_fast, y_plain, atol=0.02)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fast(x, training=True)[:, 0])
        grads = tape.gradient(loss, fast.trainable_variables)
        assert all(g is not None and np.isfinite(np.asarray(g, "float32")).all() for g in grads)
    finally:
        keras.config.set_dtype_policy("float32")
    assert type(fast.get_layer("stage1_entry_gelu")) is keras.layers.Activation
    assert fast.get_config() == plain.get_config()


@pytest.mark.parametrize("size, kernel, strides, padding, product", [
    (1, 3, 1, "same", "dense"),    # a 3x3 kernel on a 1x1 map: only the centre tap sees it
    (2, 3, 2, "same", "dense"),    # ResNet-50 v1.5 stage-4 downsampling 3x3
    (2, 3, 1, "same", "dense"),    # ResNet-50 stage 3's 3x3 convolutions at 32x32
    (3, 3, 2, "same", "dense"),    # some pixel pairs joined by no tap: zero blocks
    (2, 1, 2, "valid", "im2col"),  # a strided 1x1 shortcut
    (2, 1, 1, "same", "im2col"),   # a 1x1 convolution on a 2x2 map: no slicing at all
    (4, 3, 2, "same", "im2col"),   # stage 3's strided 3x3: 9 windows of a 4x4 map
])
def test_small_conv_matmul_matches_conv2d(size, kernel, strides, padding, product):
    import keras
    import tensorflow as tf

    from keras_resnet.training.small_convs import use_matmul_for_small_convs

    keras.utils.set_random_seed(2)
    inputs = keras.Input((size, size, 16))
    outputs = keras.layers.Conv2D(8, kernel, strides=strides, padding=padding,
                                  activation="relu")(inputs)
    plain = keras.Model(inputs, outputs)
    plain.layers[1].bias.assign(np.linspace(-1, 1, 8).astype("float32"))
    fast = keras.Model.from_config(plain.get_config())
    fast.set_weights(plain.get_weights())
    assert use_matmul_for_small_convs(fast) == 1
    assert fast.layers[1]._call_plan["product"] == product
    x = tf.constant(np.random.default_rng(0).normal(size=(5, size, size, 16)).astype("float32"))

    def forward_and_gradients(model):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model(x, training=True)
            loss = tf.reduce_sum(y * tf.range(1.0, 9.0))
        return y, tape.gradient(loss, [x] + model.trainable_variables)

    y_plain, g_plain = forward_and_gradients(plain)
    y_fast, g_fast = forward_and_gradients(fast)
    np.testing.assert_allclose(y_fast, y_plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_fast, g_plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert fast.get_config() == plain.get_config()


@pytest.mark.parametrize("size, kernel, padding", [
    (7, 3, "same"), (3, 3, "same"), (4, 1, "same"), (6, 3, "valid"), (5, 2, "same"),
])
def test_filter_gradient_as_tap_products_matches_tensorflows_kernel(size, kernel, padding):
    import tensorflow as tf

    from keras_resnet.training.filter_gradients import filter_gradient

    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(4, size, size, 6)).astype("float32"))
    w = tf.constant(rng.normal(size=(kernel, kernel, 6, 5)).astype("float32"))
    y_shape = tf.nn.conv2d(x, w, 1, padding.upper()).shape
    dy = tf.constant(rng.normal(size=y_shape).astype("float32"))
    expected = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=w.shape, out_backprop=dy,
                                               strides=[1, 1, 1, 1], padding=padding.upper())
    top, left = ((kernel - 1) // 2, (kernel - 1) // 2) if padding == "same" else (0, 0)
    pads = [[0, 0], [top, kernel - 1 - top], [left, kernel - 1 - left], [0, 0]]
    got = filter_gradient(x, dy, w.shape, pads, y_shape[1:3])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_matmul_filter_gradients_train_like_conv2d_in_bfloat16():
    import keras
    import tensorflow as tf

    from keras_resnet.training.filter_gradients import use_matmul_filter_gradients

    keras.utils.set_random_seed(4)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((5, 5, 256))
        hidden = keras.layers.Conv2D(256, 3, padding="same", activation="relu")(inputs)
        outputs = keras.layers.Conv2D(8, 3, padding="same")(hidden)   # too narrow: kept
        plain = keras.Model(inputs, outputs)
        fast = keras.Model.from_config(plain.get_config())
        fast.set_weights(plain.get_weights())
        assert use_matmul_filter_gradients(fast) == 1
        x = tf.constant(np.random.default_rng(0).normal(size=(6, 5, 5, 256)), tf.float32)

        def forward_and_gradients(model):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.cast(model(x, training=True), tf.float32)
                loss = tf.reduce_sum(y * tf.range(1.0, 9.0))
            return y, tape.gradient(loss, [x] + model.trainable_variables)

        y_plain, g_plain = forward_and_gradients(plain)
        y_fast, g_fast = forward_and_gradients(fast)
    finally:
        keras.config.set_dtype_policy("float32")
    np.testing.assert_array_equal(y_fast, y_plain)     # the forward pass is Keras's own
    for a, b in zip(g_fast, g_plain):
        a, b = np.asarray(a, "float32"), np.asarray(b, "float32")
        # Both round a float32 sum to bfloat16 (8 bits of mantissa): 2% of the largest entry.
        np.testing.assert_allclose(a, b, rtol=0, atol=0.02 * np.abs(b).max())
    assert fast.get_config() == plain.get_config()


def test_matmul_filter_gradients_pick_wide_small_map_convs_in_bfloat16_only():
    import keras

    from keras_resnet.models import create_model
    from keras_resnet.training.filter_gradients import use_matmul_filter_gradients

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        airbench = create_model("airbench95", num_classes=10, input_shape=(32, 32, 3))
        # Stage 2's second convolution (384 channels, 7x7) and stage 3's two (512, 7x7 and
        # 3x3); not stage 2's first (15x15) nor the stem.
        assert use_matmul_filter_gradients(airbench) == 3
        assert "call" in vars(airbench.get_layer("stage3_block1_conv1"))
        assert "call" not in vars(airbench.get_layer("stage2_entry_conv"))
    finally:
        keras.config.set_dtype_policy("float32")
    assert use_matmul_filter_gradients(create_model("airbench95", num_classes=10,
                                                    input_shape=(32, 32, 3))) == 0


def test_small_conv_matmul_picks_only_tiny_outputs_of_resnet50_at_32px():
    from keras_resnet.models import create_model
    from keras_resnet.training.small_convs import use_matmul_for_small_convs

    model = create_model("resnet50", num_classes=4, input_shape=(32, 32, 3))
    # Stage 3 (2x2 maps, 6 blocks x 3 convs + shortcut) and stage 4 (1x1 maps, 3 x 3 +
    # shortcut), less stage 3's first 1x1 conv, which still sees stage 2's 4x4 map.
    assert use_matmul_for_small_convs(model) == (6 * 3 + 1 - 1) + (3 * 3 + 1)
    assert use_matmul_for_small_convs(create_model("resnet20", num_classes=4,
                                                   input_shape=(32, 32, 3))) == 0


@pytest.mark.parametrize("asked, save_freq, steps_per_epoch, expected", [
    ("auto", "epoch", 352, 8),   # CIFAR-10 at batch 128: 8 divides 352
    ("auto", "epoch", 50, 5),    # 8 would make Keras train 56 steps an epoch
    ("auto", 20, 50, 5),         # and divide the step-level backup frequency
    ("auto", 100, 352, 4),
    ("auto", "epoch", 13, 1),
    (16, "epoch", 40, 10),
    (3, "epoch", 2, 2),
])
def test_steps_per_execution_divides_the_epoch(asked, save_freq, steps_per_epoch, expected):
    from keras_resnet.training.fit import resolve_steps_per_execution

    config = {"steps_per_execution": asked, "checkpoint": {"save_freq": save_freq}}
    chosen = resolve_steps_per_execution(config, steps_per_epoch)
    assert chosen == expected
    assert steps_per_epoch % chosen == 0
    assert resolve_steps_per_execution(config, steps_per_epoch, distributed=True) == 1
