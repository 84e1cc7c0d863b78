"""Hyperparameter search end to end on the built-in ``shapes`` data: trials, best.yaml that
``fit`` accepts, resuming without repeating finished trials, folds, and one-line errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from conftest import SMALL_MODEL
from keras_resnet.cli.main import cli
from keras_resnet.training import tune as tune_module
from keras_resnet.training.config import parse_overrides, resolve_config
from keras_resnet.training.search_space import load_space
from keras_resnet.training.tune import check_space, trial_recipe, tune

REPO = Path(__file__).resolve().parents[1]
# A few seconds a trial: tiny images, a handful of steps, no augmentation.
QUICK = {**parse_overrides(SMALL_MODEL),
         "data.spec": "shapes:classes=3,train=48,val=12,size=16", "epochs": 1,
         "steps_per_epoch": 2, "batch_size": 8, "data.augment": "none",
         "schedule.name": "constant", "tensorboard": False, "precision": "float32"}
SPACE = {"hyperparameters": {"optimizer.lr": {"min": 0.01, "max": 0.2, "log": True},
                             "label_smoothing": [0.0, 0.1]}}


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_search_resumes_without_repeating_trials_and_best_yaml_trains(tmp_path, monkeypatch):
    output = tmp_path / "search"
    calls = []
    original = tune_module.RecipeHyperModel.train_and_score

    def counted(self, model, config, *args, **kwargs):
        calls.append((config["optimizer"]["lr"], config["label_smoothing"]))
        if interrupt and len(calls) == 2:
            raise KeyboardInterrupt     # as if the user pressed Ctrl-C in trial 2
        return original(self, model, config, *args, **kwargs)

    monkeypatch.setattr(tune_module.RecipeHyperModel, "train_and_score", counted)

    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        tune(None, SPACE, trials=3, output=output, overrides=QUICK, verbose=0)
    rows = read_rows(output / "trials.csv")
    assert [(r["trial"], r["status"]) for r in rows] == [("1", "completed")]
    first_trial_file = next((output / "tuner").glob("trial_*0/trial.json"))
    first_trial_json = first_trial_file.read_text()

    # The same call again: trial 1 is kept, the interrupted trial 2 reruns, then trial 3.
    interrupt = False
    result = tune(None, SPACE, trials=3, output=output, overrides=QUICK, verbose=0)
    assert len(calls) == 4
    assert calls[2] == calls[1]                    # the interrupted values, retried
    assert first_trial_file.read_text() == first_trial_json
    rows = read_rows(output / "trials.csv")
    assert [r["status"] for r in rows] == ["completed"] * 3
    assert len({r["trial_id"] for r in rows}) == 3
    assert {"optimizer.lr", "label_smoothing", "score", "seconds"} <= set(rows[0])
    assert all(0.0 <= float(r["score"]) <= 1.0 and float(r["seconds"]) > 0 for r in rows)
    assert (output / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Finished: running it once more trains nothing and rewrites the same table.
    again = tune(None, SPACE, trials=3, output=output, overrides=QUICK, verbose=0)
    assert len(calls) == 4
    assert again.trials == result.trials

    # best.yaml is the best trial's complete recipe, valid for fit.
    scores = [float(r["score"]) for r in rows]
    best_row = rows[int(np.argmax(scores))]
    assert result.best_score == pytest.approx(max(scores))
    best = resolve_config(str(output / "best.yaml"))
    assert best == trial_recipe(resolve_config(None, QUICK), result.best_values)
    assert best["optimizer"]["lr"] == pytest.approx(float(best_row["optimizer.lr"]))
    assert best["label_smoothing"] == pytest.approx(float(best_row["label_smoothing"]))
    assert best["data"]["spec"] == QUICK["data.spec"]

    from keras_resnet.training.fit import fit

    run = fit(str(output / "best.yaml"), output=tmp_path / "run", overrides={"verbose": 0})
    assert run.ok and (run.run_dir / "model.keras").is_file()
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text()) == dict(best, verbose=0)

    # Another space into the same folder is refused instead of mixing two searches, and so is
    # a key that changes scores, even one that also changes speed; one that changes only speed
    # is not (the finished search trains nothing).
    other = {"hyperparameters": {"optimizer.lr": [0.1, 0.2]}}
    with pytest.raises(ValueError, match="holds another search .*space"):
        tune(None, other, trials=3, output=output, overrides=QUICK, verbose=0)
    with pytest.raises(ValueError, match="recipe key float32_activations"):
        tune(None, SPACE, trials=3, output=output, verbose=0,
             overrides=dict(QUICK, float32_activations=True))
    tune(None, SPACE, trials=3, output=output, verbose=0,
         overrides=dict(QUICK, steps_per_execution=1))
    assert len(calls) == 4


def test_cli_folds_report_mean_and_std(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("hyperparameters:\n  optimizer.weight_decay: [0.0005]\n")
    output = tmp_path / "folds"
    overrides = [f"{k}={v}" for k, v in QUICK.items() if k != "data.spec"]
    result = CliRunner().invoke(cli, [
        "tune", "--space", str(space), "--folds", "2", "--trials", "1", "-o", str(output),
        "--data", "shapes:classes=3,train=61,val=6,size=16", "verbose=0", *overrides])
    assert result.exit_code == 0, result.output
    [row] = read_rows(output / "trials.csv")
    folds = [float(row[f"fold_{i}"]) for i in (1, 2)]
    assert "fold_3" not in row
    # 61 images (21/20/20 a class) split into folds of 31 and 30, so even a model that
    # predicts one class scores differently on the two.
    assert folds[0] != folds[1] and float(row["score_std"]) > 0
    assert float(row["score"]) == pytest.approx(np.mean(folds))
    assert float(row["score_std"]) == pytest.approx(np.std(folds))
    assert f"{float(row['score']):.4f} ± {float(row['score_std']):.4f}" in result.output
    assert json.loads((output / "search.json").read_text())["folds"] == 2
    assert "2-fold cross-validation" in (output / "best.yaml").read_text()


@pytest.mark.parametrize("line, message", [
    ("optimizer.lrr: [0.1, 0.2]",
     "hyperparameter 'optimizer.lrr': unknown hyperparameter, not a recipe key "
     "(did you mean 'optimizer.lr'?)"),
    ("optimizer.lr: {min: 0.5, max: 0.1}", "'optimizer.lr': bad range"),
    ("optimizer.lr: {min: 0.1, max: 0.5, type: decimal}", "unknown type 'decimal'"),
    ("optimizer.name: [sgd, adam]",
     "'optimizer.name': 'adam' is not a valid recipe value (optimizer.name: must be one of "
     "sgd, adamw, muon; got 'adam')"),
    ("batch_size: {min: 0, max: 64}", "'batch_size': 0 is not a valid recipe value"),
    ("optimizer: [sgd]", "'optimizer' is a section; name one of its keys"),
    ("data.spec: [shapes, cifar10]", "'data.spec' cannot be tuned"),
])
def test_cli_bad_space_file_is_one_line_and_exit_2(tmp_path, line, message):
    space = tmp_path / "bad.yaml"
    space.write_text(f"hyperparameters:\n  {line}\n")
    result = CliRunner().invoke(cli, ["tune", "--space", str(space), "-o",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {space}: ")
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_refuses_grid_over_a_continuous_range_and_hyperband_folds(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("hyperparameters:\n  optimizer.lr: {min: 0.01, max: 0.1}\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["tune", "--space", str(space), "--search", "grid"])
    assert result.exit_code == 2
    assert "grid search needs discrete values" in result.output
    result = runner.invoke(cli, ["tune", "--space", str(space), "--search", "hyperband",
                                 "--folds", "2"])
    assert result.exit_code == 2 and "does not combine with hyperband" in result.output
    result = runner.invoke(cli, ["tune", "--space", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "no such search-space file" in result.output


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "spaces").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_example_spaces_fit_the_recipes(path):
    space = load_space(path)
    search = "grid" if "grid" in path.name else "random"
    check_space(space, resolve_config(None), search)
