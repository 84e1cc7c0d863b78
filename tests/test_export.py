"""Export: every format and quantization through the parity gate on real CIFAR-10 images,
the failure paths, the manifest's hashes, and loading with the plain runtimes.

The exports are expensive, so each model is trained and exported once per module and the tests
read the results.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from keras_resnet.cli.main import cli

ALL_ARTIFACTS = {"saved_model", "model.onnx", "model.tflite", "model_float16.tflite",
                 "model_dynamic.tflite", "model_int8.tflite"}
GATES = {"none": ("max_abs_diff", 1e-5), "float16": ("max_abs_diff", 1e-2),
         "dynamic": ("top1_agreement", 0.99), "int8": ("top1_agreement", 0.98)}
TRAIN_EPOCHS = 15
BATCH_SIZE = 50
# The ImageNet-layout ResNet-18 at a quarter of its width: the same graph (7x7 stem, max pool,
# strided projection shortcuts) for the exporters, where the full width trains ~30x slower at
# 32x32 on a CPU without adding anything the converters see.
MODEL_OPTIONS = {"resnet20": {}, "resnet18": {"width_multiplier": 0.25}}


def _images(folder, count=None):
    """The images of a CIFAR subset folder with their labels, via the data layer."""
    from keras_resnet.data import load_data

    data = load_data(str(folder), batch_size=1000, image_size=32, val_split=0.0, cache=False)
    images, labels = next(iter(data.dataset("all")))
    return np.asarray(images, np.float32)[:count], np.asarray(labels)[:count], data.class_names


def _train(arch, folder, path):
    """A model with confident outputs on the parity images, saved with its metadata.

    A randomly initialised ResNet gives near-uniform probabilities: its top-1 class is decided
    by differences far below int8 resolution, so the top-1 agreement of a quantized model would
    measure noise. Trained for a few epochs on the 200 images of ``cifar_small`` it fits them
    (100% train accuracy) and is confident on them, so the parity gate runs on those images and
    the dynamic-range and int8 gates check real agreement (``test_the_test_model_is_confident``
    guards this). On held-out images a model trained on 200 images is unsure of many (top-two
    margins of 0.01), where even a faithful int8 model flips a few percent of the answers; the
    held-out images calibrate int8 and check the float artifacts instead.
    """
    import keras

    from keras_resnet.data import load_data
    from keras_resnet.models import create_model, save_model

    keras.utils.set_random_seed(0)
    data = load_data(str(folder), batch_size=BATCH_SIZE, image_size=32, val_split=0.0, cache=False)
    model = create_model(arch, num_classes=10, input_shape=(32, 32, 3), **MODEL_OPTIONS[arch])
    # Annealed to zero so the last epoch settles the model instead of leaving it mid-step:
    # at a constant rate the ResNet-20 ended with two of its images at top-two margins under 0.05.
    steps = TRAIN_EPOCHS * math.ceil(data.num_examples["train"] / BATCH_SIZE)
    rate = keras.optimizers.schedules.CosineDecay(2e-3, steps)
    model.compile(keras.optimizers.Adam(rate), "sparse_categorical_crossentropy")
    model.fit(data.train, epochs=TRAIN_EPOCHS, verbose=0)
    save_model(model, path, {"class_names": data.class_names, "arch": arch,
                             "image_size": [32, 32]})
    return path


@pytest.fixture(scope="module")
def parity_images(cifar_small):
    return _images(cifar_small)


@pytest.fixture(scope="module")
def heldout(cifar_heldout):
    return _images(cifar_heldout)


@pytest.fixture(scope="module")
def export_of(tmp_path_factory, cifar_small, cifar_heldout):
    """``export_of(arch)``: a trained model exported to every format and quantization, as
    (model file, export dir, manifest), made once per architecture. Parity on the training
    images, int8 calibration on the held-out ones."""
    from keras_resnet.export import export

    made = {}

    def make(arch):
        if arch not in made:
            root = tmp_path_factory.mktemp(f"export_{arch}")
            model_file = _train(arch, cifar_small, root / f"{arch}.keras")
            manifest = export(model_file, root / "export", formats="all", quantize="all",
                              parity_data=str(cifar_small), calibration_data=str(cifar_heldout))
            made[arch] = (model_file, root / "export", manifest)
        return made[arch]

    return make


@pytest.fixture(scope="module", params=list(MODEL_OPTIONS))
def exported(request, export_of):
    return export_of(request.param)


@pytest.fixture(scope="module")
def resnet20_export(export_of):
    """The failure paths need one model only."""
    return export_of("resnet20")


@pytest.fixture(scope="module")
def keras_model(exported):
    import keras

    return keras.models.load_model(exported[0])


@pytest.fixture(scope="module")
def keras_reference(keras_model, parity_images):
    return np.asarray(keras_model.predict(parity_images[0], verbose=0))


def test_the_test_model_is_confident(keras_reference):
    """int8 may flip images whose top two probabilities nearly tie; the int8 gate allows 2% of
    disagreement, so at most 1% of the parity images may be that close."""
    top_two = np.sort(keras_reference, axis=1)[:, -2:]
    assert top_two[:, 1].mean() > 0.5
    assert (top_two[:, 1] - top_two[:, 0] < 0.05).mean() <= 0.01


def test_every_format_and_quantization_passes_the_gate(exported):
    _, directory, manifest = exported
    assert {entry["path"] for entry in manifest["artifacts"]} == ALL_ARTIFACTS
    assert manifest["rejected"] == []
    for entry in manifest["artifacts"]:
        parity = entry["parity"]
        measure, threshold = GATES[entry["quantization"]]
        assert (parity["check"], parity["threshold"]) == (measure, threshold)
        assert parity["passed"] is True and parity["num_images"] == 200
        if measure == "max_abs_diff":
            assert parity["max_abs_diff"] <= threshold
        else:
            assert parity["top1_agreement"] >= threshold
        # the labels are known: both accuracies and their difference are reported
        assert parity["accuracy_change"] == pytest.approx(
            parity["accuracy_artifact"] - parity["accuracy_keras"])
        assert (directory / entry["path"]).exists()
    assert not list(directory.glob(".export-*")), "staging folder left behind"


def test_each_artifact_checked_independently_against_keras(exported, parity_images,
                                                          keras_reference):
    """Reload every artifact through load_artifact and redo the comparison here."""
    from keras_resnet.export import load_artifact

    _, directory, manifest = exported
    images, labels, class_names = parity_images
    formats = set()
    for entry in manifest["artifacts"]:
        predictor = load_artifact(directory / entry["path"])
        formats.add(predictor.format)
        assert predictor.class_names == class_names
        assert predictor.input_shape == (32, 32, 3)
        outputs = predictor.predict(images, batch_size=32)
        measure, threshold = GATES[entry["quantization"]]
        if measure == "max_abs_diff":
            assert np.abs(outputs - keras_reference).max() <= threshold, entry["name"]
        else:
            agreement = (outputs.argmax(1) == keras_reference.argmax(1)).mean()
            assert agreement >= threshold, entry["name"]
            assert agreement == pytest.approx(entry["parity"]["top1_agreement"])
        accuracy = (outputs.argmax(1) == labels).mean()
        assert accuracy == pytest.approx(entry["parity"]["accuracy_artifact"])
    assert formats == {"savedmodel", "onnx", "tflite"}


def test_quantized_files_are_smaller(exported):
    _, _, manifest = exported
    size = {e["quantization"]: e["size_bytes"] for e in manifest["artifacts"]
            if e["format"] == "tflite"}
    assert size["float16"] < 0.6 * size["none"]
    assert size["dynamic"] < 0.35 * size["none"]
    assert size["int8"] < 0.35 * size["none"]


def test_manifest_hashes_and_input_spec(exported, cifar_heldout):
    model_file, directory, manifest = exported
    on_disk = json.loads((directory / "manifest.json").read_text())
    assert on_disk == manifest
    for entry in manifest["artifacts"]:
        path = directory / entry["path"]
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
            assert path.stat().st_size == entry["size_bytes"]
        else:  # the SavedModel: sha256 of the sorted "relative-path NUL file-sha256" lines
            listing = "".join(
                f"{f.relative_to(path).as_posix()}\0{hashlib.sha256(f.read_bytes()).hexdigest()}\n"
                for f in sorted(p for p in path.rglob("*") if p.is_file()))
            assert hashlib.sha256(listing.encode()).hexdigest() == entry["sha256"]
    assert manifest["architecture"] == model_file.stem
    assert manifest["source"]["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert manifest["input"]["shape"] == [None, 32, 32, 3]
    assert manifest["input"]["value_range"] == [0, 255]
    assert manifest["input"]["preprocessing"]["baked_in"] is True
    assert manifest["output"] == {"name": "probabilities", "shape": [None, 10],
                                  "dtype": "float32", "activation": "softmax"}
    assert len(manifest["class_names"]) == 10 and "airplane" in manifest["class_names"]
    for package in ("keras", "tensorflow", "tf2onnx", "onnxruntime"):
        assert manifest["versions"][package]
    int8 = next(e for e in manifest["artifacts"] if e["quantization"] == "int8")
    assert int8["calibration"] == {"source": str(cifar_heldout), "num_images": 100,
                                   "labelled": True}


def test_files_load_with_the_plain_runtimes(exported, heldout, keras_model):
    """No keras_resnet code: onnxruntime, ai_edge_litert and tf.saved_model on their own, on
    held-out images."""
    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    _, directory, _ = exported
    images = heldout[0][:7]  # an odd batch size: the batch dimension is dynamic
    reference = np.asarray(keras_model(images, training=False))

    session = onnxruntime.InferenceSession(str(directory / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    (model_input,), (model_output,) = session.get_inputs(), session.get_outputs()
    assert (model_input.name, model_output.name) == ("images", "probabilities")
    assert model_input.shape == ["batch", 32, 32, 3]
    outputs = session.run(["probabilities"], {"images": images})[0]
    assert np.abs(outputs - reference).max() <= 1e-5

    for name, tolerance in (("model.tflite", 1e-5), ("model_float16.tflite", 1e-2),
                            ("model_int8.tflite", 0.5)):
        interpreter = Interpreter(model_path=str(directory / name))
        runner = interpreter.get_signature_runner("serve")
        outputs = runner(images=images)["probabilities"]
        assert outputs.shape == (7, 10) and outputs.dtype == np.float32  # int8 inside only
        assert np.abs(outputs - reference).max() <= tolerance, name
        assert np.allclose(outputs.sum(axis=1), 1.0, atol=0.02), name

    serve = tf.saved_model.load(str(directory / "saved_model")).signatures["serve"]
    outputs = serve(images=tf.constant(images))["probabilities"].numpy()
    assert np.abs(outputs - reference).max() <= 1e-5


def _copy_export(directory, destination):
    return Path(shutil.copytree(directory, destination))


def test_a_tampered_artifact_is_refused(resnet20_export, tmp_path):
    from keras_resnet.export import load_artifact

    _, directory, _ = resnet20_export
    copy = _copy_export(directory, tmp_path / "copy")
    onnx_file = copy / "model.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_artifact(onnx_file)
    (copy / "saved_model" / "extra.txt").write_text("not part of the export")
    with pytest.raises(ValueError, match="sha256"):
        load_artifact(copy / "saved_model")
    load_artifact(copy / "model.tflite")  # the untouched ones still load

    result = CliRunner().invoke(cli, ["export", str(copy), "--verify"])
    assert result.exit_code == 1
    assert "model.onnx" in result.output and "saved_model" in result.output
    assert "model.tflite" not in result.output
    clean = CliRunner().invoke(cli, ["export", str(directory), "--verify"])
    assert clean.exit_code == 0, clean.output


def test_an_impossible_tolerance_fails_and_publishes_nothing(resnet20_export, cifar_heldout,
                                                             tmp_path):
    model_file, _, _ = resnet20_export
    out = tmp_path / "strict"
    result = CliRunner().invoke(cli, [
        "export", str(model_file), "--output", str(out), "--format", "tflite",
        "--quantize", "float16", "--parity-data", str(cifar_heldout), "--parity-samples", "20",
        "--max-abs-diff", "1e-9"])
    assert result.exit_code == 1, result.output
    assert "tflite_float16: max_abs_diff" in result.output
    assert "exceeds the tolerance 1e-09" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifacts"] == []
    (rejected,) = manifest["rejected"]
    assert rejected["parity"]["passed"] is False and rejected["path"] is None
    assert rejected["parity"]["max_abs_diff"] > 1e-9
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


def test_a_failed_reexport_keeps_the_published_artifact(resnet20_export, cifar_heldout,
                                                         tmp_path):
    """A new attempt that fails the gate neither replaces nor unlists the artifact that passed."""
    from keras_resnet.export import ExportGateError, export, load_artifact

    model_file, directory, _ = resnet20_export
    copy = _copy_export(directory, tmp_path / "copy")
    before = (copy / "model_float16.tflite").read_bytes()
    with pytest.raises(ExportGateError, match="max_abs_diff") as failure:
        export(model_file, copy, formats="tflite", quantize="float16",
               parity_data=str(cifar_heldout), parity_samples=10, max_abs_diff=1e-9)
    manifest = failure.value.manifest
    assert [e["name"] for e in manifest["rejected"]] == ["tflite_float16"]
    assert {e["path"] for e in manifest["artifacts"]} == ALL_ARTIFACTS
    assert all(e["parity"]["passed"] for e in manifest["artifacts"])
    assert (copy / "model_float16.tflite").read_bytes() == before
    load_artifact(copy / "model_float16.tflite")  # still listed, hash still matches
