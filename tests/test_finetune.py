"""Fine-tuning end to end: ``keras-resnet finetune`` on real CIFAR-10 vehicle images, from a zoo
model saved as ``.keras`` and from a randomly initialised ``keras.applications.ResNet50`` whose
weights come from a local ``.h5`` file (no network)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import keras

from conftest import cifar_subset
from keras_resnet.cli.main import cli
from keras_resnet.models import create_model, read_metadata, save_model
from keras_resnet.training.freezing import part_of

VEHICLES = ["airplane", "automobile", "ship", "truck"]
SOURCE_CLASSES = ["bird", "cat", "deer", "dog", "frog", "horse"]


def backbone_weights(model) -> dict:
    """Every backbone weight by path, BatchNorm moving statistics included."""
    return {w.path: w.numpy() for layer in model.layers
            if part_of(layer.name) not in (None, "head") for w in layer.weights}


def changed_parts(before: dict, after: dict) -> set:
    return {part_of(path.split("/")[0]) for path in before
            if not np.array_equal(before[path], after[path])}


def run_cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def vehicles(tmp_path_factory):
    """12 real CIFAR-10 images of each vehicle class."""
    return cifar_subset(tmp_path_factory.mktemp("vehicles"), per_class=12, classes=VEHICLES)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A six-class ResNet-9 (a quarter width: short fits) saved the way fit saves it."""
    keras.utils.set_random_seed(0)
    model = create_model("resnet9", num_classes=6, input_shape=(32, 32, 3), width_multiplier=0.25)
    path = tmp_path_factory.mktemp("source") / "animals.keras"
    save_model(model, path, {"class_names": SOURCE_CLASSES, "arch": "resnet9",
                             "image_size": [32, 32]})
    return path


def test_finetune_from_keras_file_then_resume(source, vehicles, tmp_path):
    run = tmp_path / "run"
    code, output = run_cli("finetune", "--from", source, "--data", vehicles, "--head-epochs", 1,
                           "--epochs", 1, "--freeze", "stage1", "--stage-lr-decay", 0.5,
                           "--batch-size", 16, "-o", run, "verbose=0", "tensorboard=false")
    assert code == 0, output
    for name in ("config.yaml", "history.csv", "best.keras", "model.keras", "metrics.json",
                 "curves.png", "head/model.keras", "finetune/model.keras"):
        assert (run / name).is_file(), name

    original = backbone_weights(keras.models.load_model(source))
    # Phase 1: the backbone, BatchNorm statistics included, is exactly the source's.
    head = keras.models.load_model(run / "head" / "model.keras")
    assert changed_parts(original, backbone_weights(head)) == set()
    assert head.get_layer("predictions").units == 4
    # Phase 2 (--freeze stage1): stem and stage1 still the source's, stages 2-3 trained.
    final = keras.models.load_model(run / "model.keras")  # plain Keras, no custom objects
    assert changed_parts(original, backbone_weights(final)) == {"stage2", "stage3"}

    metadata = read_metadata(run / "model.keras")
    assert metadata["class_names"] == VEHICLES
    assert metadata["finetuned_from"] == str(source)
    assert metadata["finetune"]["freeze"] == "stage1"
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3)).astype("float32")
    probabilities = final.predict(images, verbose=0)
    assert probabilities.shape == (5, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["freeze"] == "stage1"
    assert metrics["phases"]["head"]["epochs"] == 1
    assert metrics["best"]["phase"] in ("head", "finetune")

    # Resuming with more epochs continues phase 2 only; phase 1 is not trained again.
    head_written = (run / "head" / "model.keras").stat().st_mtime_ns
    code, output = run_cli("finetune", "-o", run, "--resume", "--epochs", 2, "verbose=0")
    assert code == 0, output
    assert (run / "head" / "model.keras").stat().st_mtime_ns == head_written
    rows = (run / "history.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert [row.split(",")[header.index("phase")] for row in rows[1:]] == ["1", "2", "2"]
    assert read_metadata(run / "model.keras")["epoch"] == 2

    code, output = run_cli("finetune", "-o", run, "--resume", "--freeze", "backbone")
    assert code == 2 and "finetune.freeze: cannot change when resuming" in output
    code, output = run_cli("finetune", "--from", source, "--data", vehicles, "-o", run)
    assert code == 2 and "not empty" in output


def test_fit_init_from(source, vehicles, tmp_path):
    run = tmp_path / "init"
    code, output = run_cli("fit", "--init-from", source, "--data", vehicles, "--epochs", 1,
                           "--batch-size", 16, "-o", run, "verbose=0", "tensorboard=false",
                           "optimizer.lr=0.0001")
    assert code == 0, output
    model = keras.models.load_model(run / "model.keras")
    assert model.output_shape == (None, 4)
    # Started from the source: at a tiny learning rate the stem barely moves from it.
    start = keras.models.load_model(source).get_layer("stem_conv").kernel.numpy()
    trained = model.get_layer("stem_conv").kernel.numpy()
    assert np.abs(trained - start).max() < 0.01 * np.abs(start).max()
    metadata = read_metadata(run / "model.keras")
    assert metadata["init_from"] == str(source) and metadata["class_names"] == VEHICLES


@pytest.mark.parametrize("args, message", [
    (["--data", "{data}"], "--from SOURCE is required"),
    (["--from", "{source}"], "needs the new data"),
    (["--from", "{source}", "--data", "{data}", "--freeze", "stage4"], "resnet9 has 3 stages"),
    (["--from", "{source}", "--data", "{data}", "finetune.head_epoch=2"],
     "finetune.head_epoch: unknown key (did you mean 'finetune.head_epochs'?)"),
    (["--from", "{source}", "--data", "{data}", "finetune.head_lr=-1"],
     "finetune.head_lr: must be greater than 0"),
    (["--from", "keras:resnet51", "--data", "{data}"], "unknown keras application 'resnet51'"),
    (["--from", "missing.keras", "--data", "{data}"], "no such model file or run directory"),
])
def test_bad_input_is_one_line_and_exit_2(source, vehicles, tmp_path, args, message):
    args = [a.format(source=source, data=vehicles) for a in args]
    code, output = run_cli("finetune", *args, "-o", tmp_path / "never")
    assert code == 2, output
    assert message in output
    assert not (tmp_path / "never").exists()


def test_random_keras_resnet50_from_local_weights_offline(vehicles, tmp_path):
    """keras:resnet50=FILE.h5 with the full network's weights (1000-class head included),
    fine-tuned end to end; the frozen stem is the file's (BGR->RGB swapped) kernel."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(0)
    application = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3))
    weights = tmp_path / "resnet50_weights.h5"
    with h5py.File(weights, "w") as handle:  # the format of Keras's ImageNet files
        legacy_h5_format.save_weights_to_hdf5_group(handle, application)
    stem = application.get_layer("conv1_conv").kernel.numpy()[:, :, ::-1, :]
    del application

    run = tmp_path / "run"
    code, output = run_cli("finetune", "--from", f"keras:resnet50={weights}", "--data", vehicles,
                           "--head-epochs", 0, "--epochs", 1, "--freeze", "stage3",
                           "--batch-size", 16, "-o", run, "verbose=0", "tensorboard=false",
                           "optimizer.clip_norm=1.0")
    assert code == 0, output
    model = keras.models.load_model(run / "model.keras")
    assert model.output_shape == (None, 4)
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(), stem)
    metadata = read_metadata(run / "model.keras")
    assert metadata["arch"] == "keras_resnet50" and metadata["class_names"] == VEHICLES
    assert json.loads((run / "metrics.json").read_text())["stopped"] == "completed"
