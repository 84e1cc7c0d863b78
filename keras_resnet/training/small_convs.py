"""Train convolutions with tiny outputs (2x2 pixels or fewer) as matrix multiplies.

At small input sizes the last stages of a ResNet see 2x2 and 1x1 feature maps (ResNet-50 on
32x32 images: stage 4 is 1x1). TensorFlow's oneDNN kernels run such a convolution as a full
one: a 3x3 kernel on a 1x1 map multiplies eight of its nine taps by padding, and the bfloat16
filter-gradient kernel is especially slow for these shapes. On this project's 2-core
AVX512-BF16 CPU the stage-4 convolutions (1x1 maps) took about 40% of a ResNet-50 training step
at 32x32, their weight gradients 3.5x their forward pass.

``use_matmul_for_small_convs(model)`` swaps the ``call`` of each such ``Conv2D`` *instance* of
a model being trained for one matrix multiply (same result, same weights, same config), so
saved models are unchanged. Of two equivalent products it takes the one with fewer
multiplications:

- ``dense``: the whole input map (``H*W*Cin`` per image) times a kernel matrix laid out from the
  taps for every (input pixel, output pixel) pair, zero where no tap joins them. The input is
  only reshaped, so the backward pass has no slicing to undo: a 3x3 kernel on a 2x2 map, or a
  strided one from 2x2 down to 1x1.
- ``im2col``: the input windows (one slice of the padded input per tap that sees the image,
  concatenated) times the taps' kernel rows: a strided 1x1 shortcut, a strided 3x3 on 4x4.

Each slice's gradient is a padded copy of the input summed with the others (``StridedSliceGrad``
and ``AddN``), which took 30% and 8% of the op time of a ResNet-50 step at 32x32 when every
small convolution went through im2col (and its kernel was gathered tap by tap); hence the
``dense`` product where it costs no more. Layers with dilation, groups or a channels-first
layout keep Keras's path.
"""
from __future__ import annotations

import keras

from keras_resnet.training.layer_calls import add_bias_and_activate, swap_calls

MAX_OUTPUT_PIXELS = 4   # 2x2 output maps and smaller


def _pads(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    """``(output size, leading pad, trailing pad)`` as TensorFlow computes them."""
    if padding == "valid":
        return (size - kernel) // stride + 1, 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _tap(pixel: int, out: int, pad: int, stride: int, kernel: int) -> int | None:
    """The kernel tap along one axis joining input ``pixel`` to output ``out``, if any."""
    tap = pixel + pad - out * stride
    return tap if 0 <= tap < kernel else None


def _plan(layer) -> dict | None:
    """How to run ``layer`` as a matrix multiply, or ``None`` when it is not a small-output
    ``Conv2D``: the product (``dense`` or ``im2col``) and the flat tap indices it gathers
    from the kernel."""
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
    # taps[p][q]: the flat kernel tap joining input pixel p to output pixel q, or None.
    taps = [[None if (i := _tap(h, oh, top, sh, kh)) is None or (j := _tap(w, ow, left, sw, kw))
             is None else i * kw + j
             for oh in range(out_h) for ow in range(out_w)]
            for h in range(height) for w in range(width)]
    seen = sorted({t for row in taps for t in row if t is not None})
    plan = {"out": (out_h, out_w), "strides": (sh, sw), "kernel_taps": kh * kw}
    # dense multiplies in_pixels * out_pixels kernel blocks, im2col out_pixels * taps seen
    # (taking dense up to twice im2col's blocks measured no faster)
    if height * width <= len(seen):
        zero = kh * kw    # the index of an all-zero block appended to the taps
        plan.update(product="dense",
                    taps=[zero if t is None else t for row in taps for t in row],
                    zero_block=any(t is None for row in taps for t in row))
    else:
        plan.update(product="im2col", taps=seen,
                    pads=[[0, 0], [top, bottom], [left, right], [0, 0]],
                    windows=[(t // kw, t % kw) for t in seen])
    return plan


def _kernel_rows(kernel, taps: list, kernel_taps: int, zero_block: bool = False):
    """``kernel[tap]`` for each flat tap index, stacked: ``(len(taps), Cin, Cout)``. One gather
    (its gradient a single scatter-add) instead of a slice per tap."""
    import tensorflow as tf

    flat = tf.reshape(kernel, [kernel_taps, kernel.shape[2], kernel.shape[3]])
    if zero_block:
        flat = tf.concat([flat, tf.zeros_like(flat[:1])], axis=0)
    if taps == list(range(kernel_taps)):
        return flat
    return tf.gather(flat, taps)


def _dense_product(plan, inputs, kernel):
    import tensorflow as tf

    in_pixels = inputs.shape[1] * inputs.shape[2]
    out_h, out_w = plan["out"]
    channels_in, filters = kernel.shape[2], kernel.shape[3]
    blocks = _kernel_rows(kernel, plan["taps"], plan["kernel_taps"], plan["zero_block"])
    blocks = tf.reshape(blocks, [in_pixels, out_h * out_w, channels_in, filters])
    if out_h * out_w > 1:
        blocks = tf.transpose(blocks, [0, 2, 1, 3])
    matrix = tf.reshape(blocks, [in_pixels * channels_in, out_h * out_w * filters])
    return tf.matmul(tf.reshape(inputs, [-1, in_pixels * channels_in]), matrix)


def _im2col_product(plan, inputs, kernel):
    import tensorflow as tf

    (out_h, out_w), (sh, sw) = plan["out"], plan["strides"]
    padded = tf.pad(inputs, plan["pads"]) if any(sum(p) for p in plan["pads"]) else inputs
    if padded.shape[1:3] == (out_h, out_w) and len(plan["windows"]) == 1:
        patches = padded    # a 1x1 kernel, stride 1: the window is the whole map
    else:
        columns = [padded[:, i:i + (out_h - 1) * sh + 1:sh, j:j + (out_w - 1) * sw + 1:sw, :]
                   for i, j in plan["windows"]]
        patches = columns[0] if len(columns) == 1 else tf.concat(columns, axis=-1)
    rows = _kernel_rows(kernel, plan["taps"], plan["kernel_taps"])
    matrix = tf.reshape(rows, [-1, kernel.shape[3]])
    return tf.matmul(tf.reshape(patches, [-1, patches.shape[-1]]), matrix)


PRODUCTS = {"dense": _dense_product, "im2col": _im2col_product}


def _matmul_call(self, inputs):
    import tensorflow as tf

    plan = self._call_plan
    kernel = tf.cast(self.kernel, inputs.dtype)
    outputs = PRODUCTS[plan["product"]](plan, inputs, kernel)
    return add_bias_and_activate(self, tf.reshape(outputs, [-1, *plan["out"], self.filters]))


def use_matmul_for_small_convs(model) -> int:
    """Route the model's ``Conv2D`` layers (nested models too) with at most
    ``MAX_OUTPUT_PIXELS`` output pixels through a matrix multiply; returns how many. Only on
    the TensorFlow backend; a no-op elsewhere."""
    return swap_calls(model, _plan, _matmul_call)
