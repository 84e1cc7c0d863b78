"""Train Keras ``BatchNormalization`` layers with TensorFlow's fused kernel.

Keras 3's ``BatchNormalization`` computes the batch moments and the normalisation as separate
ops, in float32 even under a mixed-precision policy (it upcasts the whole activation). On the
TensorFlow backend that is the largest cost of training a small ResNet on a CPU: TensorFlow's
``FusedBatchNormV3`` (a oneDNN kernel that reads bfloat16 directly) trained ResNet-20 about
1.7x faster per CPU-second on this machine's AVX512-BF16 CPU.

``use_fused_batchnorm(model)`` swaps the ``call`` of each eligible layer *instance* of a model
being trained; the layers stay plain ``keras.layers.BatchNormalization`` (same weights, same
config), so saved models are unchanged and load anywhere. The maths is Keras's: the same
moving-average update with the biased batch variance. Layers with masks, renormalisation,
synchronisation, a non-last axis or a non-4D input keep Keras's own path.
"""
from __future__ import annotations

import keras

from keras_resnet.training.layer_calls import swap_calls


def _eligible(layer) -> bool:
    if type(layer) is not keras.layers.BatchNormalization:
        return False
    axis = layer.axis if isinstance(layer.axis, int) else (
        layer.axis[0] if len(layer.axis) == 1 else None)
    rank = len(layer.input.shape) if hasattr(layer, "_inbound_nodes") and layer._inbound_nodes \
        else 4
    return (axis in (-1, 3) and rank == 4 and not getattr(layer, "renorm", False)
            and not getattr(layer, "synchronized", False))


def _fused_call(self, inputs, training=None, mask=None):
    import tensorflow as tf

    if mask is not None or len(inputs.shape) != 4:
        return type(self).call(self, inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
    offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
    x = inputs
    if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
        x = tf.cast(x, tf.float32)
    if training and self.trainable:
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        # The kernel returns the unbiased variance; Keras tracks the biased one.
        shape = tf.shape(x)
        count = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
        variance = variance * tf.maximum(count - 1.0, 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(
            tf.cast(self.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            tf.cast(self.moving_variance, tf.float32) * momentum + variance * (1.0 - momentum))
    else:
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, mean=tf.cast(self.moving_mean, tf.float32),
            variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
            data_format="NHWC", is_training=False)
    return tf.cast(y, self.compute_dtype)


def use_fused_batchnorm(model) -> int:
    """Route the model's eligible BatchNorm layers (nested models too) through the fused
    kernel; returns how many. Only on the TensorFlow backend; a no-op elsewhere."""
    return swap_calls(model, _eligible, _fused_call)
