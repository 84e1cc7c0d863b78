"""Swap the ``call`` of chosen layer *instances* of a model being trained for an equivalent,
faster computation. The layers keep their class, weights and config, so a saved model is plain
Keras; the training speed-ups (``fused_batchnorm``, ``small_convs``) are built on this."""
from __future__ import annotations

import types

import keras


def all_layers(model):
    """Every layer of ``model``, nested models' layers included."""
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


def add_bias_and_activate(layer, outputs):
    """The rest of a convolution layer's ``call`` after its product: the bias (with
    ``BiasAdd``, as Keras: in bfloat16 its gradient sums in float32, a plain add's does not)
    and the activation."""
    import tensorflow as tf

    if layer.use_bias:
        outputs = tf.nn.bias_add(outputs, tf.cast(layer.bias, outputs.dtype))
    return layer.activation(outputs) if layer.activation is not None else outputs


def swap_calls(model, plan, call) -> int:
    """Bind ``call`` as the ``call`` of each layer for which ``plan(layer)`` is truthy (stored
    as ``layer._call_plan`` for ``call`` to read), skipping layers already swapped; returns how
    many. Only on the TensorFlow backend, whose kernels these calls use; a no-op elsewhere."""
    if keras.backend.backend() != "tensorflow":
        return 0
    count = 0
    for layer in all_layers(model):
        if "call" in vars(layer):
            continue
        layer_plan = plan(layer)
        if layer_plan:
            object.__setattr__(layer, "_call_plan", layer_plan)
            object.__setattr__(layer, "call", types.MethodType(call, layer))
            count += 1
    return count
