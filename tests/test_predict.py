"""``predict`` and ``keras-resnet predict``: top-k per image, formats, unreadable files, bad paths.

The model is an untrained ResNet-20 (predict's plumbing does not care how good it is); the
probabilities are checked against the Keras model run directly.
"""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from keras_resnet.cli.main import cli
from keras_resnet.evaluation import predict

CLASSES = ["circle", "square", "triangle", "star"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import keras

    from keras_resnet.models import create_model, save_model

    keras.utils.set_random_seed(1)
    model = create_model("resnet20", num_classes=len(CLASSES), input_shape=(32, 32, 3))
    path = tmp_path_factory.mktemp("predict_model") / "model.keras"
    return save_model(model, path, {"class_names": CLASSES, "arch": "resnet20",
                                    "image_size": [32, 32]})


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Five readable images (one in a subfolder, one grayscale 48x40 PNG) and a corrupt one."""
    root = tmp_path_factory.mktemp("predict_images")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for name in ("a.jpg", "b.png", "sub/c.jpg", "d.jpg"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / name)
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8), "L").save(root / "gray.png")
    (root / "broken.jpg").write_bytes(b"this is not a JPEG")
    return root


def run(*args):
    return CliRunner().invoke(cli, ["predict", *map(str, args)])


def test_predict_api_top_k_matches_the_keras_model(model_path, images):
    from keras_resnet.data import read_image
    from keras_resnet.models import load_model

    results = predict(model_path, [images], top_k=3)
    by_name = {r["path"].split("/")[-1]: r for r in results}
    assert set(by_name) == {"a.jpg", "b.png", "c.jpg", "d.jpg", "gray.png", "broken.jpg"}
    assert "error" in by_name["broken.jpg"] and "broken.jpg" in by_name["broken.jpg"]["error"]

    model = load_model(model_path)
    good = [r for r in results if "error" not in r]
    batch = np.stack([read_image(r["path"], image_size=(32, 32)) for r in good])
    expected = np.asarray(model.predict(batch.astype("float32"), verbose=0))
    for result, probabilities in zip(good, expected):
        guesses = result["predictions"]
        assert len(guesses) == 3
        assert [g["class"] for g in guesses] == [CLASSES[i] for i in
                                                 np.argsort(-probabilities, kind="stable")[:3]]
        np.testing.assert_allclose([g["probability"] for g in guesses],
                                   np.sort(probabilities)[::-1][:3], rtol=1e-4, atol=1e-6)
    # more than the model has: every class once, ranked
    everything = predict(model_path, [images / "a.jpg"], top_k=10)[0]["predictions"]
    assert sorted(g["class"] for g in everything) == sorted(CLASSES)
    assert sum(g["probability"] for g in everything) == pytest.approx(1.0, abs=1e-4)


def test_cli_json_reports_unreadable_files_and_goes_on(model_path, images):
    result = run(model_path, images / "a.jpg", images / "missing.jpg", images,
                 "--format", "json", "--top-k", "2")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["top_k"] == 2
    paths = [r["path"] for r in payload["results"]]
    assert paths[:2] == [str(images / "a.jpg"), str(images / "missing.jpg")]
    assert len(paths) == 2 + 6
    errors = {r["path"].split("/")[-1]: r["error"] for r in payload["results"] if "error" in r}
    assert set(errors) == {"missing.jpg", "broken.jpg"}
    assert "no such file" in errors["missing.jpg"]
    for r in payload["results"]:
        if "error" not in r:
            assert len(r["predictions"]) == 2 and r["predictions"][0]["class"] in CLASSES
            assert r["predictions"][0]["probability"] >= r["predictions"][1]["probability"]
    assert "2 of 8 path(s) could not be predicted" in result.stderr


def test_cli_csv_and_table(model_path, images):
    result = run(model_path, images, "--format", "csv", "-k", "2")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["path", "top1", "top1_probability", "top2", "top2_probability",
                             "error"]
    assert len(rows) == 6
    broken = [r for r in rows if r["path"].endswith("broken.jpg")][0]
    assert broken["error"] and not broken["top1"]
    good = [r for r in rows if not r["error"]]
    assert all(r["top1"] in CLASSES and 0 <= float(r["top1_probability"]) <= 1 for r in good)

    table = run(model_path, images / "a.jpg", images / "broken.jpg")
    assert table.exit_code == 0, table.output
    lines = table.stdout.strip().splitlines()
    assert len(lines) == 2 and "%" in lines[0] and "ERROR:" in lines[1]


def test_cli_fails_when_nothing_could_be_predicted(model_path, images, tmp_path):
    result = run(model_path, images / "broken.jpg", tmp_path / "nope.png")
    assert result.exit_code == 2
    assert "Error: nothing could be predicted" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(model_path, empty)
    assert result.exit_code == 2 and "folder holds no images" in result.output


def test_cli_bad_model_path_is_a_clear_error(images, tmp_path):
    result = run(tmp_path / "no_model.keras", images)
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("Error:") and "no_model.keras" in result.stderr
    not_a_model = tmp_path / "fake.keras"
    not_a_model.write_text("hello")
    result = run(not_a_model, images)
    assert result.exit_code == 2 and "Error:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_bad_top_k_is_refused(model_path, images):
    with pytest.raises(ValueError, match="top_k"):
        predict(model_path, [images], top_k=0)
    assert run(model_path, images, "--top-k", "0").exit_code == 2
