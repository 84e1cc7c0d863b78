"""Search-space files: parsing into keras-tuner hyperparameters, grids, and one-line errors."""
from __future__ import annotations

import keras_tuner as kt
import pytest

from keras_resnet.training.crossval import stratified_folds, summarise
from keras_resnet.training.search_space import load_space, parse_objective, parse_space


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_space_file_declares_keras_tuner_hyperparameters(tmp_path):
    space = load_space(write(tmp_path, """
objective: val_loss
hyperparameters:
  lr: {min: 1e-3, max: 0.1, log: true}
  batch_size: [32, 64]
  label_smoothing: {min: 0.0, max: 0.3, step: 0.1}
  depth: {min: 2, max: 8, step: 2, log: true}
  nesterov: {type: bool}
"""))
    assert space.objective.name == "val_loss" and space.objective.direction == "min"
    hp = kt.HyperParameters()
    values = space.declare(hp)
    kinds = {h.name: type(h).__name__ for h in hp.space}
    assert kinds == {"lr": "Float", "batch_size": "Choice", "label_smoothing": "Choice",
                     "depth": "Int", "nesterov": "Boolean"}
    lr = hp.space[0]
    assert (lr.min_value, lr.max_value, lr.sampling) == (1e-3, 0.1, "log")
    assert values["batch_size"] == 32
    # The float grid keeps its top end (keras-tuner's own float step would drop 0.3).
    assert space.hyperparameters[2].grid() == [0.0, 0.1, 0.2, 0.3]
    assert space.hyperparameters[3].grid() == [2, 4, 8]
    assert space.grid_size() is None          # lr is continuous
    with pytest.raises(ValueError, match="grid search needs discrete values.*'lr'"):
        space.require_grid()


def test_grid_size_of_a_discrete_space():
    space = parse_space({"hyperparameters": {
        "lr": {"min": 0.001, "max": 0.1, "step": 10, "log": True},
        "batch_size": [32, 64]}})
    assert space.hyperparameters[0].grid() == [0.001, 0.01, 0.1]
    assert space.grid_size() == 6
    assert space.objective.name == "val_accuracy" and space.objective.direction == "max"


@pytest.mark.parametrize("text, message", [
    ("hyperparameters:\n  lr: {min: 0.5, max: 0.1}\n", "'lr': bad range: min .* below max"),
    ("hyperparameters:\n  lr: {min: 0, max: 0.1, log: true}\n", "'lr': a log range must be positive"),
    ("hyperparameters:\n  lr: {type: real, min: 0, max: 1}\n", "'lr': unknown type 'real'"),
    ("hyperparameters:\n  lr: {min: abc, max: 1}\n", "'lr': .*must be a number"),
    ("hyperparameters:\n  lr: {mn: 0, max: 1}\n", "'lr': unknown field 'mn'"),
    ("hyperparameters:\n  batch_size: []\n", "'batch_size': values must be a non-empty list"),
    ("hyperparameters:\n  arch: [resnet20, 56]\n", "'arch': values mix types"),
    ("hyperparameters:\n  depth: {min: 1, max: 2.5, type: int}\n", "whole number"),
    ("hyperparameters: {}\n", "name at least one"),
    ("hyperparameter:\n  lr: [0.1]\n", "unknown section 'hyperparameter'"),
    ("objective: val_top5\nhyperparameters:\n  lr: [0.1]\n", "write val_top5:max or val_top5:min"),
    ("hyperparameters:\n  lr: [0.1\n", "not valid YAML"),
])
def test_bad_space_file_is_one_clear_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as info:
        load_space(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_missing_space_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such search-space file"):
        load_space(tmp_path / "nope.yaml")


def test_objective_forms():
    assert parse_objective("val_top5:max").direction == "max"
    assert parse_objective({"name": "val_loss"}).direction == "min"
    assert parse_objective(None).name == "val_accuracy"


def test_stratified_folds_cover_every_example_once():
    labels = [0] * 6 + [1] * 9 + [2] * 3
    folds = stratified_folds(labels, 3, seed=1)
    assert len(folds) == 3
    seen = sorted(i for _, val in folds for i in val)
    assert seen == list(range(len(labels)))
    for train, val in folds:
        assert not set(train) & set(val)
        assert sorted([labels[i] for i in val]) == [0, 0, 1, 1, 1, 2]
    assert stratified_folds(labels, 3, seed=1)[0][1].tolist() == folds[0][1].tolist()
    with pytest.raises(ValueError, match="class 2 has 3"):
        stratified_folds(labels, 4)
    assert summarise([0.5, 0.7]) == pytest.approx((0.6, 0.1))


def test_trial_score_is_the_best_finite_epoch_before_a_nan():
    from keras_tuner.errors import FailedTrialError, FatalValueError

    from keras_resnet.training.tune import score_history

    logged = {"val_accuracy": [0.4, 0.7, 0.6, 0.9], "val_loss": [1.2, 0.8, float("nan"), 0.5]}
    accuracy, loss = parse_objective("val_accuracy"), parse_objective("val_loss")
    assert score_history(logged, accuracy) == 0.9
    assert score_history(logged, loss) == 0.5
    assert score_history(logged, accuracy, nan_epoch=2) == 0.7    # epochs 3 and 4 left out
    with pytest.raises(FailedTrialError, match="NaN in the first epoch"):
        score_history(logged, accuracy, nan_epoch=0)
    with pytest.raises(FatalValueError, match="'val_top5:max'|'val_top5'.*available: "
                                              "val_accuracy, val_loss"):
        score_history(logged, parse_objective("val_top5:max"))
