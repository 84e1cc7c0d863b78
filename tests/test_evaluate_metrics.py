"""Evaluation figures against hand-computed examples, with predictors whose outputs we control.

No trained model here: each "image" carries its index in its pixels, and the predictor looks its
probabilities up in a table, so every figure can be worked out by hand.
"""
from __future__ import annotations

import json
import math
from fractions import Fraction as F

import numpy as np
import pytest
from PIL import Image

from keras_resnet.evaluation import evaluate, predict_data
from keras_resnet.evaluation.ensemble import predict_with_tta
from keras_resnet.evaluation.metrics import classification_metrics
from keras_resnet.evaluation.plots import figure_pixels
from keras_resnet.evaluation.report import format_report
from keras_resnet.export.predictor import Predictor

CLASSES = ["cat", "dog", "bird"]
#            true  predicted
LABELS = [0, 0, 0, 0, 1, 1, 2, 2]
PREDICTED = [0, 0, 0, 1, 1, 1, 2, 0]
# probability each image gives its true class (the argmax follows PREDICTED)
P_TRUE = [0.9, 0.6, 0.5, 0.3, 0.8, 0.4, 0.7, 0.2]


def table_probabilities():
    rows = []
    for label, predicted, p_true in zip(LABELS, PREDICTED, P_TRUE):
        row = np.zeros(3)
        row[label] = p_true
        rest = [c for c in range(3) if c != label]
        if predicted == label:
            row[rest] = (1 - p_true) / 2
        else:
            other = [c for c in rest if c != predicted][0]
            row[predicted] = (1 - p_true) * 0.8
            row[other] = (1 - p_true) * 0.2
        assert row.argmax() == predicted
        rows.append(row)
    return np.array(rows)


def indexed_images(n, size=4):
    """Image i is filled with the value i (the predictors read it back)."""
    return np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None],
                           (n, size, size, 3)).copy()


class TablePredictor(Predictor):
    """Returns row i of ``table`` for the image filled with i."""

    format = "table"

    def __init__(self, table, class_names, name="table"):
        super().__init__(name, class_names, (4, 4, 3))
        self.table = np.asarray(table, dtype=np.float32)

    def _predict_batch(self, images):
        return self.table[images[:, 0, 0, 0].astype(int)]


class MirrorAwarePredictor(TablePredictor):
    """Row i of ``table`` for image i, row i of ``mirrored`` for its horizontal mirror.

    Images carry their index in the left column and 255 elsewhere, so a flip is detectable.
    """

    def __init__(self, table, mirrored, class_names):
        super().__init__(table, class_names)
        self.mirrored = np.asarray(mirrored, dtype=np.float32)

    def _predict_batch(self, images):
        flipped = images[:, 0, 0, 0] == 255
        index = np.where(flipped, images[:, 0, -1, 0], images[:, 0, 0, 0]).astype(int)
        return np.where(flipped[:, None], self.mirrored[index], self.table[index])


def hand_figures():
    """Precision, recall and F1 of the example worked out by hand from its confusion matrix."""
    matrix = [[3, 1, 0],   # cat: 3 right, 1 called dog
              [0, 2, 0],   # dog: both right
              [1, 0, 1]]   # bird: 1 right, 1 called cat
    per_class = {}
    for c, name in enumerate(CLASSES):
        tp = matrix[c][c]
        precision = F(tp, sum(row[c] for row in matrix))
        recall = F(tp, sum(matrix[c]))
        f1 = 2 * precision * recall / (precision + recall)
        per_class[name] = (precision, recall, f1, sum(matrix[c]))
    return matrix, per_class


def test_figures_match_hand_computation():
    report = classification_metrics(LABELS, table_probabilities(), CLASSES)
    matrix, per_class = hand_figures()
    assert report["confusion_matrix"] == matrix
    assert report["classes"] == CLASSES
    assert report["num_images"] == 8
    assert report["accuracy"] == pytest.approx(6 / 8)
    assert report["top5_accuracy"] is None  # only 3 classes
    for name, (precision, recall, f1, support) in per_class.items():
        got = report["per_class"][name]
        assert got["precision"] == pytest.approx(float(precision))
        assert got["recall"] == pytest.approx(float(recall))
        assert got["f1"] == pytest.approx(float(f1))
        assert got["support"] == support
    # cat 3/4, dog P 2/3 R 1 F1 4/5, bird P 1 R 1/2 F1 2/3
    assert report["per_class"]["dog"]["f1"] == pytest.approx(0.8)
    assert report["per_class"]["bird"]["precision"] == pytest.approx(1.0)
    macro = sum(v[2] for v in per_class.values()) / 3
    weighted = sum(v[2] * v[3] for v in per_class.values()) / 8
    assert report["macro_f1"] == pytest.approx(float(macro))
    assert report["weighted_f1"] == pytest.approx(float(weighted))
    assert report["macro_f1"] == pytest.approx((0.75 + 0.8 + 2 / 3) / 3)
    loss = -sum(math.log(p) for p in P_TRUE) / 8
    assert report["loss"] == pytest.approx(loss, rel=1e-5)


def test_top5_counts_true_class_within_five():
    # 6 classes; the true class (0) ranks 1st, 3rd, 5th and 6th in the four images
    ranks = [1, 3, 5, 6]
    probabilities = []
    for rank in ranks:
        row = np.array([0.30, 0.25, 0.20, 0.12, 0.08, 0.05])  # sorted, descending
        order = list(range(1, 6))
        order.insert(rank - 1, 0)  # class 0 at position rank-1
        probabilities.append(row[np.argsort(order)])
    report = classification_metrics([0, 0, 0, 0], probabilities, list("abcdef"))
    assert report["accuracy"] == pytest.approx(1 / 4)
    assert report["top5_accuracy"] == pytest.approx(3 / 4)


def test_evaluate_api_writes_json_and_png(tmp_path):
    predictor = TablePredictor(table_probabilities(), CLASSES)
    data = (indexed_images(8), np.array(LABELS), CLASSES)
    report = evaluate(predictor, data, output=tmp_path / "out" / "report.json", batch_size=3)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    for key in ("accuracy", "top5_accuracy", "loss", "macro_f1", "weighted_f1", "per_class",
                "confusion_matrix", "classes", "num_images"):
        assert saved[key] == report[key]
    assert saved["accuracy"] == pytest.approx(0.75)
    assert saved["confusion_matrix"] == hand_figures()[0]
    assert set(saved["per_class"]["cat"]) == {"precision", "recall", "f1", "support"}
    png = tmp_path / "out" / "report_confusion.png"
    assert saved["confusion_matrix_png"] == str(png)
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size == figure_pixels(3)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp left
    text = format_report(report)
    assert "bird" in text and "75.00%" in text and "weighted avg" in text


def test_confusion_png_path_option_and_size_grows_with_classes(tmp_path):
    labels = np.arange(12) % 12
    table = np.eye(12)[labels]
    predictor = TablePredictor(table, [f"class{i}" for i in range(12)])
    report = evaluate(predictor, (indexed_images(12), labels), confusion_png=tmp_path / "cm.png")
    assert report["accuracy"] == 1.0 and report["top5_accuracy"] == 1.0
    with Image.open(tmp_path / "cm.png") as image:
        assert image.size == figure_pixels(12)
    assert figure_pixels(12)[0] > figure_pixels(3)[0]
    assert not (tmp_path / "report.json").exists()


def test_ensemble_is_mean_of_probabilities_and_self_ensemble_is_the_model():
    a = table_probabilities()
    b = np.roll(a, 1, axis=1)  # a second model that is mostly wrong
    data = (indexed_images(8), np.array(LABELS), CLASSES)
    single = evaluate(TablePredictor(a, CLASSES), data)
    twice = evaluate([TablePredictor(a, CLASSES), TablePredictor(a, CLASSES)], data)
    for key in ("accuracy", "top5_accuracy", "loss", "macro_f1", "weighted_f1", "per_class",
                "confusion_matrix", "classes", "num_images"):
        assert twice[key] == single[key], key  # (p + p) / 2 == p exactly
    assert [m["model"] for m in twice["models"]] == ["table", "table#2"]

    pair = evaluate([TablePredictor(a, CLASSES), TablePredictor(b, CLASSES)], data)
    expected = classification_metrics(LABELS, (a + b) / 2, CLASSES)
    assert pair["accuracy"] == expected["accuracy"]
    assert pair["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert pair["confusion_matrix"] == expected["confusion_matrix"]
    assert pair["models"][1]["accuracy"] == classification_metrics(LABELS, b, CLASSES)["accuracy"]


def test_tta_flip_averages_image_and_mirror():
    a = table_probabilities()
    mirrored = np.roll(a, 1, axis=1)
    images = np.full((8, 4, 4, 3), 255, np.float32)
    images[:, :, 0, :] = np.arange(8)[:, None, None]  # index in the left column
    predictor = MirrorAwarePredictor(a, mirrored, CLASSES)
    np.testing.assert_allclose(predict_with_tta(predictor, images, None), a, rtol=1e-6)
    np.testing.assert_allclose(predict_with_tta(predictor, images, "flip"), (a + mirrored) / 2,
                               rtol=1e-6)
    report = evaluate(predictor, (images, np.array(LABELS), CLASSES), tta="flip")
    expected = classification_metrics(LABELS, (a + mirrored) / 2, CLASSES)
    assert report["tta"] == "flip"
    assert report["confusion_matrix"] == expected["confusion_matrix"]
    assert report["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        evaluate(predictor, (images, np.array(LABELS)), tta="rotate")


def test_tta_flip_translate_weights_the_shifted_mirror_pairs():
    """Each view's mean pixel picks its own probabilities, so the weighted mean is checkable."""
    images = np.random.default_rng(0).uniform(0, 255, (4, 6, 6, 3)).astype(np.float32)

    class PixelPredictor:
        def predict(self, batch, batch_size=None, verbose=0):
            # probabilities: softmax of a fixed function of the batch's pixels
            logits = np.stack([batch[:, 0, 0, 0], batch[:, -1, -1, 1], batch[:, 0, -1, 2]], 1)
            e = np.exp((logits - logits.max(1, keepdims=True)) / 50)
            return e / e.sum(1, keepdims=True)

    predictor = PixelPredictor()
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    down_right, up_left = padded[:, :6, :6], padded[:, 2:, 2:]

    def pair(x):
        return predictor.predict(x) + predictor.predict(x[:, :, ::-1])

    expected = pair(images) / 4 + pair(down_right) / 8 + pair(up_left) / 8
    np.testing.assert_allclose(predict_with_tta(predictor, images, "flip-translate"), expected,
                               rtol=1e-6)
    assert not np.allclose(expected, pair(images) / 2, rtol=1e-3)   # the shifts matter
    assert down_right[0, 1, 1, 0] == images[0, 0, 0, 0]   # moved one pixel down-right


def test_classes_are_matched_by_name():
    # The model lists its classes in another order; the data holds two of its three classes.
    model_classes = ["bird", "cat", "dog"]
    table = table_probabilities()[:, [2, 0, 1]]  # the same predictions, columns reordered
    keep = [i for i, label in enumerate(LABELS) if label != 2]  # no birds in the data
    data = (indexed_images(8)[keep], np.array(LABELS)[keep], ["cat", "dog"])
    predictions = predict_data(TablePredictor(table, model_classes), data)
    assert predictions.class_names == model_classes
    np.testing.assert_array_equal(predictions.labels, [1, 1, 1, 1, 2, 2])
    report = evaluate(TablePredictor(table, model_classes), data)
    assert report["classes"] == model_classes
    assert report["per_class"]["bird"]["support"] == 0
    assert report["accuracy"] == pytest.approx(5 / 6)
    assert any("2 of the model's 3 classes" in note for note in report["notes"])


def test_unknown_data_class_is_a_clear_error():
    data = (indexed_images(8), np.array(LABELS), ["cat", "dog", "horse"])
    with pytest.raises(ValueError, match=r"class names do not match.*horse"):
        evaluate(TablePredictor(table_probabilities(), CLASSES), data)


def test_ensemble_members_with_other_classes_are_refused():
    data = (indexed_images(8), np.array(LABELS), CLASSES)
    other = TablePredictor(table_probabilities(), ["cat", "dog", "fish"], name="other")
    with pytest.raises(ValueError, match=r"other has different classes.*fish"):
        evaluate([TablePredictor(table_probabilities(), CLASSES), other], data)


def test_bad_split_and_empty_data_are_clear_errors():
    predictor = TablePredictor(table_probabilities(), CLASSES)
    with pytest.raises(ValueError, match="unknown split"):
        evaluate(predictor, (indexed_images(8), np.array(LABELS)), split="holdout")
    with pytest.raises(ValueError, match="no images"):
        evaluate(predictor, (indexed_images(0), np.zeros(0, int)))
