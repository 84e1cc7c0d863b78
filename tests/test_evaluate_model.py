"""``evaluate`` on a real trained ResNet-20 and real CIFAR-10 JPEGs, checked independently.

The model trains for a few epochs on ``cifar_small`` and is evaluated on ``cifar_heldout``
(a folder of class subfolders without split folders, hence ``split="all"``). The reference
figures come from each file read on its own (``read_image``, the pipeline's decoder),
``model.predict`` and plain NumPy counting.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import cifar_subset
from keras_resnet.cli.main import cli
from keras_resnet.evaluation import evaluate, predict, predict_data
from keras_resnet.evaluation.plots import figure_pixels


def read_folder(root: Path):
    """Images, labels and class names of a class-folder dataset, file by file.

    Decoded by ``read_image`` rather than Pillow: TensorFlow's JPEG decoder (the pipeline's)
    differs from Pillow's by a few levels per pixel, enough to flip a near tie.
    """
    from keras_resnet.data import read_image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((root / name).glob("*.jpg")):
            images.append(read_image(path))
            labels.append(index)
    return np.stack(images), np.array(labels), classes


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_small):
    """A ResNet-20 trained 3 epochs on 200 CIFAR-10 images, as a .keras file and a run dir."""
    import keras

    from keras_resnet.models import create_model, save_model

    images, labels, classes = read_folder(cifar_small)
    keras.utils.set_random_seed(0)
    model = create_model("resnet20", num_classes=len(classes), input_shape=(32, 32, 3))
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=3, batch_size=32, verbose=0)
    root = tmp_path_factory.mktemp("evaluate_model")
    path = save_model(model, root / "model.keras",
                      {"class_names": classes, "arch": "resnet20", "image_size": [32, 32]})
    run_dir = root / "run"
    run_dir.mkdir()
    shutil.copy(path, run_dir / "best.keras")
    return {"path": path, "run_dir": run_dir, "model": model, "classes": classes}


@pytest.fixture(scope="module")
def reference(trained, cifar_heldout):
    """Probabilities of the held-out images from the Keras model itself, and the labels."""
    images, labels, classes = read_folder(cifar_heldout)
    assert classes == trained["classes"]
    model = trained["model"]
    probabilities = np.asarray(model.predict(images.astype("float32"), verbose=0), np.float64)
    mirrored = np.asarray(model.predict(images[:, :, ::-1].astype("float32"), verbose=0),
                          np.float64)
    return {"images": images, "labels": labels, "probabilities": probabilities,
            "mirrored": mirrored}


def independent_figures(labels, probabilities, num_classes):
    predicted = probabilities.argmax(axis=1)
    matrix = np.zeros((num_classes, num_classes), int)
    np.add.at(matrix, (labels, predicted), 1)
    tp = np.diag(matrix)
    precision = np.divide(tp, matrix.sum(0), out=np.zeros(num_classes), where=matrix.sum(0) > 0)
    recall = tp / matrix.sum(1)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_classes),
                   where=precision + recall > 0)
    rank = (probabilities > probabilities[np.arange(len(labels)), labels][:, None]).sum(1)
    return {
        "accuracy": float((predicted == labels).mean()),
        "top5_accuracy": float((rank < 5).mean()),
        "loss": float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels],
                                      1e-7, 1)).mean()),
        "confusion_matrix": matrix.tolist(),
        "precision": precision, "recall": recall, "f1": f1,
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * matrix.sum(1)).sum() / len(labels)),
    }


def assert_matches(report, expected, classes):
    assert report["confusion_matrix"] == expected["confusion_matrix"]
    assert report["accuracy"] == pytest.approx(expected["accuracy"])
    assert report["top5_accuracy"] == pytest.approx(expected["top5_accuracy"])
    assert report["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert report["macro_f1"] == pytest.approx(expected["macro_f1"])
    assert report["weighted_f1"] == pytest.approx(expected["weighted_f1"])
    for i, name in enumerate(classes):
        assert report["per_class"][name]["precision"] == pytest.approx(expected["precision"][i])
        assert report["per_class"][name]["recall"] == pytest.approx(expected["recall"][i])
        assert report["per_class"][name]["f1"] == pytest.approx(expected["f1"][i])


def test_heldout_folder_figures_match_an_independent_computation(trained, cifar_heldout,
                                                                 reference):
    report = evaluate(trained["path"], str(cifar_heldout), split="all")
    classes = trained["classes"]
    assert report["classes"] == classes and report["num_images"] == 100
    assert all(report["per_class"][c]["support"] == 10 for c in classes)
    expected = independent_figures(reference["labels"], reference["probabilities"], len(classes))
    assert_matches(report, expected, classes)
    assert report["accuracy"] > 0.15  # learned something: chance is 0.10
    assert report["format"] == "keras" and report["split"] == "all"


def test_tta_flip_on_a_real_model(trained, cifar_heldout, reference):
    report = evaluate(trained["run_dir"], str(cifar_heldout), split="all", tta="flip")
    averaged = (reference["probabilities"] + reference["mirrored"]) / 2
    assert_matches(report, independent_figures(reference["labels"], averaged, 10),
                   trained["classes"])


def test_ensemble_of_a_model_with_itself_equals_the_model(trained, cifar_heldout):
    single = evaluate(trained["path"], str(cifar_heldout), split="all")
    both = evaluate([trained["path"], trained["run_dir"]], str(cifar_heldout), split="all")
    assert len(both["models"]) == 2
    for key in ("accuracy", "top5_accuracy", "macro_f1", "weighted_f1", "per_class",
                "confusion_matrix", "classes", "num_images"):
        assert both[key] == single[key], key
        assert both["models"][1][key] == single[key], key
    assert both["loss"] == pytest.approx(single["loss"], rel=1e-6)
    predictions = predict_data([trained["path"], trained["run_dir"]], str(cifar_heldout),
                               split="all")
    first, second = predictions.probabilities.values()
    np.testing.assert_allclose(predictions.ensemble, first, rtol=1e-6)
    np.testing.assert_allclose(first, second, rtol=1e-6)


def test_predict_top1_matches_evaluate(trained, cifar_heldout):
    report = evaluate(trained["path"], str(cifar_heldout), split="all")
    results = predict(trained["path"], [cifar_heldout], top_k=5)
    classes = report["classes"]
    matrix = np.zeros((len(classes), len(classes)), int)
    for result in results:
        true = classes.index(Path(result["path"]).parent.name)
        matrix[true, classes.index(result["predictions"][0]["class"])] += 1
    assert matrix.tolist() == report["confusion_matrix"]


def test_cli_writes_table_json_and_png(trained, cifar_heldout, tmp_path):
    output = tmp_path / "reports" / "report.json"
    result = CliRunner().invoke(cli, ["evaluate", str(trained["path"]), "--data",
                                      str(cifar_heldout), "--split", "all", "--output",
                                      str(output)])
    assert result.exit_code == 0, result.output
    report = json.loads(output.read_text())
    assert {"accuracy", "top5_accuracy", "loss", "macro_f1", "weighted_f1", "per_class",
            "confusion_matrix", "classes", "num_images"} <= set(report)
    assert sum(map(sum, report["confusion_matrix"])) == report["num_images"] == 100
    assert f"{100 * report['accuracy']:.2f}%" in result.stdout
    assert "airplane" in result.stdout and "weighted avg" in result.stdout
    png = tmp_path / "reports" / "report_confusion.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == figure_pixels(10)
        assert np.asarray(image.convert("L")).std() > 10  # a drawing, not a blank canvas

    chosen = tmp_path / "elsewhere" / "cm.png"
    result = CliRunner().invoke(cli, ["evaluate", str(trained["path"]), "--data",
                                      str(cifar_heldout), "--split", "all", "--confusion-png",
                                      str(chosen), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["confusion_matrix_png"] == str(chosen) and chosen.is_file()


@pytest.mark.parametrize("case", ["missing_model", "not_a_model", "missing_data", "no_test_split",
                                  "unknown_class"])
def test_cli_bad_input_fails_with_one_clear_line(case, trained, cifar_heldout, tmp_path):
    model, data, split = str(trained["path"]), str(cifar_heldout), "all"
    expected = {"missing_model": "no_such.keras", "not_a_model": "fake.keras",
                "missing_data": "nowhere", "no_test_split": "test",
                "unknown_class": "class names do not match"}[case]
    if case == "missing_model":
        model = str(tmp_path / "no_such.keras")
    elif case == "not_a_model":
        (tmp_path / "fake.keras").write_text("not a model")
        model = str(tmp_path / "fake.keras")
    elif case == "missing_data":
        data = str(tmp_path / "nowhere")
    elif case == "no_test_split":
        split = "test"
    elif case == "unknown_class":
        data = cifar_subset(tmp_path / "other", per_class=2, classes=["cat", "dog"])
        (data / "dog").rename(data / "wolf")
        data = str(data)
    result = CliRunner().invoke(cli, ["evaluate", model, "--data", data, "--split", split])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and expected in lines[0], lines
