"""The parity gate: does an artifact compute what the Keras model computes?

Both run on the same batch of images; we measure the largest absolute difference of any
probability and how often the top-1 class agrees, and, when the images have labels, the accuracy
of each. Which measure gates an artifact depends on its quantization (``GATES``): float artifacts
must match closely, quantized ones must agree on the predicted class.
"""
from __future__ import annotations

import numpy as np

# quantization -> (the measure that gates it, its default threshold)
#
# float16 allows 1e-2, not 1e-3: storing the weights in float16 moves a trained model's
# probabilities by several 1e-3 with a correct conversion. Measured on random held-out
# CIFAR-10 validation images: a TFLite float16 file of the 88.5% cifar10_fast model differed by
# 3.0e-3 over 256 images and 6.8e-3 over 1,000; one of a ResNet-20 (85%) by 7.9e-3 and 9.7e-3. The error is
# the file's, not the runtime's (the same with and without XNNPACK), and no weight tensor is off
# by more than half a float16 step (4.7e-4 relative); rounding only the conv kernels inside
# Keras already gives 1e-3. A conversion bug (wrong channel order, lost preprocessing) moves
# probabilities by 0.1-1.
GATES = {
    "none": ("max_abs_diff", 1e-5),
    "float16": ("max_abs_diff", 1e-2),
    "dynamic": ("top1_agreement", 0.99),
    "int8": ("top1_agreement", 0.98),
}


def gate_for(quantization: str, max_abs_diff: float | None = None,
             min_top1_agreement: float | None = None) -> tuple[str, float]:
    """``(measure, threshold)`` for ``quantization``, with an optional override of either."""
    measure, threshold = GATES[quantization]
    override = max_abs_diff if measure == "max_abs_diff" else min_top1_agreement
    return measure, float(threshold if override is None else override)


def compare(reference: np.ndarray, outputs: np.ndarray, *, measure: str, threshold: float,
            labels: np.ndarray | None = None) -> dict:
    """The parity entry of the manifest for one artifact's ``outputs`` against ``reference``."""
    reference = np.asarray(reference, dtype=np.float64)
    outputs = np.asarray(outputs, dtype=np.float64)
    if reference.shape != outputs.shape:
        raise ValueError(f"artifact output shape {outputs.shape} differs from the Keras "
                         f"model's {reference.shape}")
    finite = bool(np.isfinite(outputs).all())
    max_abs_diff = float(np.abs(reference - outputs).max()) if finite else float("inf")
    top1 = reference.argmax(axis=1) == outputs.argmax(axis=1)
    result = {
        "num_images": int(len(reference)),
        "max_abs_diff": max_abs_diff,
        "top1_agreement": float(top1.mean()),
        "top1_disagreements": int((~top1).sum()),
        "check": measure,
        "threshold": threshold,
    }
    if measure == "max_abs_diff":
        result["passed"] = finite and max_abs_diff <= threshold
    else:
        result["passed"] = finite and result["top1_agreement"] >= threshold
    if labels is not None:
        labels = np.asarray(labels)
        keras_accuracy = float((reference.argmax(axis=1) == labels).mean())
        artifact_accuracy = float((outputs.argmax(axis=1) == labels).mean())
        result.update(accuracy_keras=keras_accuracy, accuracy_artifact=artifact_accuracy,
                      accuracy_change=artifact_accuracy - keras_accuracy)
    return result


def describe_failure(name: str, parity: dict) -> str:
    """One line saying which check failed and by how much."""
    measure, threshold = parity["check"], parity["threshold"]
    value = parity[measure]
    if measure == "max_abs_diff":
        return (f"{name}: max_abs_diff {value:.3g} exceeds the tolerance {threshold:.3g} "
                f"(by {value - threshold:.3g}) on {parity['num_images']} images")
    return (f"{name}: top1_agreement {value:.2%} is below the required {threshold:.2%} "
            f"(short by {threshold - value:.2%}; {parity['top1_disagreements']} of "
            f"{parity['num_images']} images disagree)")
