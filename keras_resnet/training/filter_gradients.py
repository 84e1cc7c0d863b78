"""Compute the filter gradients of wide bfloat16 convolutions on small maps as matrix multiplies.

oneDNN's bfloat16 filter-gradient kernel (``Conv2DBackpropFilter``) is slow when the feature map
is small and the channels many: on this project's 2-core AVX512-BF16 CPU, at batch 512, a 3x3
convolution with 384 channels in and out on a 7x7 map took 179 ms for its filter gradient
against 67 ms for its forward pass, and one with 512 channels on a 3x3 map 85 ms against 37 ms
(airbench95's last two stages). The same gradient as one matrix multiply per kernel tap, each
input window (a slice of the padded input, flattened over batch and pixels) transposed times
the output gradient, took 104 and 26 ms. For wide maps or few channels oneDNN's kernel is the
faster one (15x15 with 128 to 384 channels: 154 against 206 ms), and in float32 it is faster
everywhere measured (``benchmarks`` entry "Filter gradients as matrix multiplies" in
BENCHMARKS.md).

``use_matmul_filter_gradients(model)`` swaps the ``call`` of each eligible ``Conv2D`` *instance*
of a model being trained (stride 1, no dilation or groups, channels last, bfloat16 compute,
an output map of at most ``MAX_OUTPUT_PIXELS`` pixels and more than the 2x2 that
``matmul_small_convs`` takes, at least ``MIN_CHANNELS`` channels in and out) for the same
convolution with a custom gradient: the input gradient from TensorFlow's own kernel, the filter
gradient from the per-tap products. Forward pass, weights and config are unchanged, so saved
models are too. Not applied where TensorFlow sees a GPU.
"""
from __future__ import annotations

import keras

from keras_resnet.training.layer_calls import add_bias_and_activate, swap_calls
from keras_resnet.training.small_convs import MAX_OUTPUT_PIXELS as SMALL_CONV_PIXELS

# Output maps of at most 8x8 pixels, and more than SMALL_CONV_PIXELS (those layers are matrix
# multiplies already); at least this many channels in and out (narrower layers gain little or lose).
MAX_OUTPUT_PIXELS = 64
MIN_CHANNELS = 256


def _plan(layer) -> dict | None:
    """The padding of an eligible layer (see the module docstring), or ``None``."""
    if type(layer) is not keras.layers.Conv2D or layer.data_format != "channels_last":
        return None
    if (tuple(layer.strides) != (1, 1) or tuple(layer.dilation_rate) != (1, 1)
            or getattr(layer, "groups", 1) != 1 or layer.compute_dtype != "bfloat16"):
        return None
    if not getattr(layer, "_inbound_nodes", None):
        return None
    _, height, width, channels_in = layer.input.shape
    if height is None or width is None or min(channels_in, layer.filters) < MIN_CHANNELS:
        return None
    kh, kw = layer.kernel_size
    if layer.padding == "same":
        pads = [[0, 0], [(kh - 1) // 2, kh // 2], [(kw - 1) // 2, kw // 2], [0, 0]]
        out_h, out_w = height, width
    else:
        pads = [[0, 0], [0, 0], [0, 0], [0, 0]]
        out_h, out_w = height - kh + 1, width - kw + 1
    if not SMALL_CONV_PIXELS < out_h * out_w <= MAX_OUTPUT_PIXELS:
        return None
    return {"pads": pads, "padding": layer.padding.upper(), "out": (out_h, out_w)}


def filter_gradient(inputs, output_gradient, kernel_shape, pads, out_hw):
    """``d loss / d kernel`` of a stride-1 convolution: per tap ``(i, j)``, the input window at
    that offset, flattened to ``(images * pixels, Cin)``, transposed times the output gradient
    flattened to ``(images * pixels, Cout)``."""
    import tensorflow as tf

    kh, kw, channels_in, filters = kernel_shape
    out_h, out_w = out_hw
    padded = tf.pad(inputs, pads) if any(sum(p) for p in pads) else inputs
    gradient = tf.reshape(output_gradient, [-1, filters])
    taps = [tf.matmul(tf.reshape(padded[:, i:i + out_h, j:j + out_w, :], [-1, channels_in]),
                      gradient, transpose_a=True)
            for i in range(kh) for j in range(kw)]
    return tf.reshape(tf.stack(taps), kernel_shape)


def _convolution(plan, inputs, kernel):
    import tensorflow as tf

    @tf.custom_gradient
    def convolve(x, w):
        y = tf.nn.conv2d(x, w, strides=1, padding=plan["padding"])

        def gradients(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=w,
                                                out_backprop=dy, strides=[1, 1, 1, 1],
                                                padding=plan["padding"])
            return dx, filter_gradient(x, dy, w.shape, plan["pads"], plan["out"])

        return y, gradients

    return convolve(inputs, kernel)


def _call(self, inputs):
    import tensorflow as tf

    return add_bias_and_activate(
        self, _convolution(self._call_plan, inputs, tf.cast(self.kernel, inputs.dtype)))


def use_matmul_filter_gradients(model) -> int:
    """Give the model's eligible ``Conv2D`` layers per-tap matrix-multiply filter gradients;
    returns how many. A no-op where TensorFlow sees a GPU (and off its backend)."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return 0
    return swap_calls(model, _plan, _call)
