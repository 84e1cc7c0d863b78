"""Compute bfloat16 activation layers (GELU, SiLU) in float32 when training on a CPU.

TensorFlow's CPU kernels for element-wise ops on bfloat16 tensors are much slower than their
float32 versions: on this project's 2-core AVX512-BF16 CPU, GELU (erf, exp and their gradients)
forward and backward on a 512x15x15x128 tensor took 158 ms in bfloat16 and 92 ms in float32,
casts both ways included. In airbench95 trained in bfloat16 the GELUs took about a third of a
training step.

``use_float32_activations(model)`` swaps the ``call`` of each ``keras.layers.Activation``
instance whose compute dtype is bfloat16 for one that casts its input to float32, applies the
same activation function and casts back: the same function, evaluated more precisely, with the
same output dtype, so the rest of the graph is untouched. The layers keep their class and config,
so saved models are unchanged (a per-layer ``dtype="float32"`` policy would do the same maths but
write the policy into the saved model and hand float32 tensors to the next layer). Not applied
where TensorFlow sees a GPU, whose bfloat16 kernels are fast.

Off by default (``float32_activations: false``): although it only removes roundings, three runs
of ``cifar10_airbench95`` with it ended 0.4-0.5 points below the same recipe with GELU in
bfloat16 (BENCHMARKS.md, "GELU in float32"); why was not investigated.
"""
from __future__ import annotations

import keras

from keras_resnet.training.layer_calls import swap_calls


def _eligible(layer) -> bool:
    return type(layer) is keras.layers.Activation and layer.compute_dtype == "bfloat16"


def _float32_call(self, inputs):
    import tensorflow as tf

    return tf.cast(self.activation(tf.cast(inputs, tf.float32)), inputs.dtype)


def use_float32_activations(model) -> int:
    """Route the model's bfloat16 ``Activation`` layers through float32; returns how many.
    A no-op where TensorFlow sees a GPU (and, through ``swap_calls``, off its backend)."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return 0
    return swap_calls(model, _eligible, _float32_call)
