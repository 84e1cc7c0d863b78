"""TFLite export: converted by TensorFlow from the SavedModel, run with ``ai_edge_litert``.

Quantizations (``QUANTIZATIONS``):

- ``none``: float32 weights and activations.
- ``float16``: float16 weights, dequantized to float32 at load; about half the size.
- ``dynamic``: int8 weights, activations quantized on the fly; about a quarter of the size.
- ``int8``: full integer: int8 weights and activations, calibrated on representative images.
  Input and output stay **float32**: the interpreter quantizes the raw 0-255 pixels on the way in
  and dequantizes the probabilities on the way out, so every artifact keeps the same interface
  (float32 0-255 NHWC pixels in, float32 probabilities out) while every operator inside runs in
  int8 (``TFLITE_BUILTINS_INT8`` only: conversion fails rather than fall back to float ops).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_resnet.export.savedmodel import SIGNATURE

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")


def _configure(converter, quantization: str, calibration_images):
    import tensorflow as tf

    if quantization == "none":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if calibration_images is None or len(calibration_images) == 0:
            raise ValueError("int8 quantization needs calibration images")
        images = np.asarray(calibration_images, dtype=np.float32)
        converter.representative_dataset = lambda: ([image[None]] for image in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32
    elif quantization != "dynamic":
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")


def write_tflite(savedmodel_path, path, *, quantization: str = "none",
                 calibration_images=None) -> Path:
    """Convert the SavedModel at ``savedmodel_path`` to a ``.tflite`` file at ``path``."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_path),
                                                         signature_keys=[SIGNATURE])
    _configure(converter, quantization, calibration_images)
    Path(path).write_bytes(converter.convert())
    return Path(path)
