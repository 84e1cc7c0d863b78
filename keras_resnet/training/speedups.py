"""The training-only speed-ups a recipe switches on: each swaps the ``call`` of layer instances
of the model being trained for an equivalent, faster computation and leaves the saved model
plain Keras."""
from __future__ import annotations

from keras_resnet.training.filter_gradients import use_matmul_filter_gradients
from keras_resnet.training.float32_activations import use_float32_activations
from keras_resnet.training.fused_batchnorm import use_fused_batchnorm
from keras_resnet.training.small_convs import use_matmul_for_small_convs

# config key -> the function that applies it to a model
SPEEDUPS = {
    "fused_batchnorm": use_fused_batchnorm,
    "matmul_small_convs": use_matmul_for_small_convs,
    "matmul_filter_gradients": use_matmul_filter_gradients,
    "float32_activations": use_float32_activations,
}


def apply_training_speedups(model, config: dict) -> dict:
    """Apply every speed-up the config turns on; returns how many layers each changed."""
    return {key: apply(model) for key, apply in SPEEDUPS.items() if config.get(key, False)}
