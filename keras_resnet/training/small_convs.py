"""Train convolutions with tiny outputs (2x2 pixels or fewer) as matrix multiplies.

At small input sizes the last stages of a ResNet see 2x2 and 1x1 feature maps (ResNet-50 on
32x32 images: stage 4 is 1x1). Such a convolution is a small matrix multiply of
its input windows (im2col, a handful of slices) by the kernel taps that can see the image, but
TensorFlow's oneDNN kernels run it as a full convolution: a 3x3 kernel on a 1x1 map multiplies
eight of its nine taps by padding, and the bfloat16 filter-gradient kernel is especially slow for
these shapes. On this project's 2-core AVX512-BF16 CPU the stage-4 convolutions (1x1 maps) took
about 40% of a ResNet-50 training step at 32x32, their weight gradients 3.5x their forward pass.

``use_matmul_for_small_convs(model)`` swaps the ``call`` of each such ``Conv2D``
*instance* of a model being trained for the equivalent matrix multiply (same result, same
weights, same config), so saved models are unchanged. Layers with dilation, groups or a
channels-first layout keep Keras's path.
"""
from __future__ import annotations

import keras

from keras_resnet.training.layer_calls import swap_calls

MAX_OUTPUT_PIXELS = 4   # 2x2 output maps and smaller


def _pads(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    """``(output size, leading pad, trailing pad)`` as TensorFlow computes them."""
    if padding == "valid":
        return (size - kernel) // stride + 1, 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _plan(layer) -> dict | None:
    """How to run ``layer`` as a matrix multiply, or ``None`` when it is not a small-output
    ``Conv2D``: the padding, and the kernel taps that see at least one real pixel (taps that
    only ever see padding are dropped, so a 3x3 kernel on a 1x1 map is a 1x1 product)."""
    if type(layer) is not keras.layers.Conv2D or layer.data_format != "channels_last":
        return None
    if tuple(layer.dilation_rate) != (1, 1) or getattr(layer, "groups", 1) != 1:
        return None
    if not getattr(layer, "_inbound_nodes", None):
        return None
    height, width = layer.input.shape[1:3]
    if height is None or width is None:
        return None
    (kh, kw), (sh, sw) = layer.kernel_size, layer.strides
    out_h, top, bottom = _pads(height, kh, sh, layer.padding)
    out_w, left, right = _pads(width, kw, sw, layer.padding)
    if out_h * out_w > MAX_OUTPUT_PIXELS:
        return None

    def sees_image(tap, pad, size, stride, out):
        return any(0 <= tap - pad + o * stride < size for o in range(out))

    taps = [(i, j) for i in range(kh) for j in range(kw)
            if sees_image(i, top, height, sh, out_h) and sees_image(j, left, width, sw, out_w)]
    return {"pads": [[0, 0], [top, bottom], [left, right], [0, 0]], "taps": taps,
            "out": (out_h, out_w), "strides": (sh, sw)}


def _matmul_call(self, inputs):
    import tensorflow as tf

    plan = self._call_plan
    (out_h, out_w), (sh, sw) = plan["out"], plan["strides"]
    padded = tf.pad(inputs, plan["pads"]) if any(sum(p) for p in plan["pads"]) else inputs
    columns = [padded[:, i:i + (out_h - 1) * sh + 1:sh, j:j + (out_w - 1) * sw + 1:sw, :]
               for i, j in plan["taps"]]
    patches = columns[0] if len(columns) == 1 else tf.concat(columns, axis=-1)
    kernel = tf.cast(self.kernel, inputs.dtype)
    kernel = tf.concat([kernel[i, j] for i, j in plan["taps"]], axis=0)
    outputs = tf.matmul(tf.reshape(patches, [-1, patches.shape[-1]]), kernel)
    if self.use_bias:
        outputs = outputs + tf.cast(self.bias, outputs.dtype)
    outputs = tf.reshape(outputs, [-1, out_h, out_w, self.filters])
    return self.activation(outputs) if self.activation is not None else outputs


def use_matmul_for_small_convs(model) -> int:
    """Route the model's ``Conv2D`` layers (nested models too) with at most
    ``MAX_OUTPUT_PIXELS`` output pixels through a matrix multiply; returns how many. Only on
    the TensorFlow backend; a no-op elsewhere."""
    return swap_calls(model, _plan, _matmul_call)
