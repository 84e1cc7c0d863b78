"""Export: the parity arithmetic, the artifact plan, bad input, and a zoo-architecture export
with a fixed batch size (the parts that need no trained model)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from keras_resnet.cli.main import cli
from keras_resnet.export.api import plan_artifacts
from keras_resnet.export.parity import compare, describe_failure, gate_for


def test_compare_measures_difference_agreement_and_accuracy():
    reference = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    outputs = np.array([[0.69, 0.21, 0.1], [0.1, 0.6, 0.3], [0.3, 0.45, 0.25], [0.5, 0.4, 0.1]])
    labels = np.array([0, 1, 1, 1])
    result = compare(reference, outputs, measure="top1_agreement", threshold=0.8, labels=labels)
    assert result["max_abs_diff"] == pytest.approx(0.15)
    assert result["top1_agreement"] == 0.75 and result["top1_disagreements"] == 1
    assert result["passed"] is False
    assert result["accuracy_keras"] == 0.5 and result["accuracy_artifact"] == 0.75
    assert result["accuracy_change"] == pytest.approx(0.25)
    assert "75.00% is below the required 80.00% (short by 5.00%; 1 of 4" in describe_failure(
        "tflite_int8", result)
    strict = compare(reference, outputs, measure="max_abs_diff", threshold=0.1)
    assert strict["passed"] is False and "accuracy_keras" not in strict
    assert "exceeds the tolerance 0.1 (by 0.05)" in describe_failure("onnx", strict)
    assert compare(reference, reference, measure="max_abs_diff", threshold=0.0)["passed"]


def test_non_finite_outputs_never_pass():
    reference = np.full((2, 3), 1 / 3)
    outputs = reference.copy()
    outputs[0, 0] = np.nan
    for measure in ("max_abs_diff", "top1_agreement"):
        assert compare(reference, outputs, measure=measure, threshold=1.0)["passed"] is False


def test_gates_follow_the_quantization_and_accept_overrides():
    assert gate_for("none") == ("max_abs_diff", 1e-5)
    assert gate_for("float16") == ("max_abs_diff", 1e-2)
    assert gate_for("dynamic") == ("top1_agreement", 0.99)
    assert gate_for("int8") == ("top1_agreement", 0.98)
    assert gate_for("none", max_abs_diff=0.5, min_top1_agreement=0.1) == ("max_abs_diff", 0.5)
    assert gate_for("int8", max_abs_diff=0.5, min_top1_agreement=0.1) == ("top1_agreement", 0.1)


def test_plan_artifacts():
    assert plan_artifacts() == [("savedmodel", "none"), ("onnx", "none"), ("tflite", "none")]
    assert plan_artifacts("tflite", "float16,int8") == [("tflite", "float16"), ("tflite", "int8")]
    assert plan_artifacts(["onnx", "tflite"], ["all"]) == [
        ("onnx", "none"), ("tflite", "none"), ("tflite", "float16"), ("tflite", "dynamic"),
        ("tflite", "int8")]
    with pytest.raises(ValueError, match="TFLite only"):
        plan_artifacts("onnx", "int8")
    with pytest.raises(ValueError, match="format must be one or more of"):
        plan_artifacts("torchscript")


def test_a_mixed_precision_model_is_exported_in_float32():
    import keras

    from keras_resnet.export.source import as_float32
    from keras_resnet.models import create_model

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = create_model("resnet20", input_shape=(32, 32, 3))
    finally:
        keras.config.set_dtype_policy("float32")
    assert "bfloat16" in {layer.compute_dtype for layer in mixed.layers}
    plain = as_float32(mixed)
    assert {layer.compute_dtype for layer in plain.layers} == {"float32"}
    for a, b in zip(mixed.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("args, message", [
    (["export", "missing.keras"], "no such model file"),
    (["export", "--arch", "resnet9000"], "resnet9000"),
    (["export", "--arch", "resnet20", "--format", "onnx", "--quantize", "int8"], "TFLite only"),
    (["export", "--arch", "resnet20", "--format", "pdf"], "format must be one or more of"),
    (["export", "--arch", "resnet20", "--batch", "zero"], "batch must be"),
    (["export", "--arch", "resnet20", "--opset", "5"], "opset must be between"),
    (["export", "--arch", "resnet20", "--weights", "imagenet"], "keras_* architecture"),
    (["export"], "give MODEL"),
    (["export", "--arch", "resnet20", "--min-top1-agreement", "2"], "--min-top1-agreement"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_verify_needs_a_manifest(tmp_path):
    result = CliRunner().invoke(cli, ["export", str(tmp_path), "--verify"])
    assert result.exit_code == 2 and "no manifest.json" in result.output


def test_zoo_architecture_with_generated_images_and_a_fixed_batch(tmp_path):
    """--arch with random weights and no data: generated images, with a warning; --batch 4
    gives a fixed-batch ONNX file that the predictor feeds in padded batches of 4."""
    import onnxruntime

    import keras_resnet
    from keras_resnet.export import load_artifact  # binds keras_resnet.export to the package

    with pytest.warns(UserWarning, match="generated shapes"):
        manifest = keras_resnet.export(arch="resnet20", output=tmp_path / "out",
                                       formats="onnx", batch=4, parity_samples=6)
    (entry,) = manifest["artifacts"]
    assert entry["parity"]["passed"] and entry["parity"]["num_images"] == 6
    assert entry["parity"]["data"] == "generated" and "accuracy_keras" not in entry["parity"]
    assert manifest["source"] == {"kind": "zoo architecture", "arch": "resnet20",
                                  "weights": "random"}
    assert manifest["input"]["shape"] == [4, 32, 32, 3]
    assert any("generated" in w for w in manifest["warnings"])
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [4, 32, 32, 3]
    predictor = load_artifact(tmp_path / "out")  # the only artifact of the directory
    assert predictor.fixed_batch == 4 and predictor.format == "onnx"
    assert predictor.provider in onnxruntime.get_available_providers()
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    assert predictor.predict(images).shape == (6, 10)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest


def test_a_model_of_any_input_size_is_exported_at_a_fixed_size():
    from keras_resnet.export.source import resolve_source
    from keras_resnet.models import create_model

    model = create_model("resnet20", input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="--image-size"):
        resolve_source(model)
    source = resolve_source(model, image_size=40)
    assert source.model.input_shape == (None, 40, 40, 3) and source.image_size == (40, 40)
    assert source.class_names == [str(i) for i in range(10)]
    images = np.random.default_rng(0).uniform(0, 255, (2, 40, 40, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(source.model(images)), np.asarray(model(images)),
                               atol=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        resolve_source(source.model, image_size=32)
