"""Milliseconds per call of TensorFlow's convolution kernels (forward, input gradient, filter
gradient) for ResNet-50's stem, stage-1 and stage-2 shapes at 32x32 input, batch 128, in
bfloat16 and float32, and the bfloat16 filter gradient computed in float32 (cast in, cast out).

It answers whether routing the slow bfloat16 filter gradients through another kernel could
close the distance to the throughput target. (Stages 3 and 4 have 2x2 and 1x1 maps there and
already train as matrix multiplies: ``keras_resnet.training.small_convs``.)

    python benchmarks/bench_conv_gradients.py
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH = 128
# (input size, in channels, out channels, kernel, stride): ResNet-50 v1.5 at 32x32.
SHAPES = [
    (32, 3, 64, 7, 2),                        # stem
    (8, 64, 64, 1, 1), (8, 64, 64, 3, 1), (8, 64, 256, 1, 1), (8, 256, 64, 1, 1),   # stage 1
    (8, 256, 128, 1, 1), (8, 128, 128, 3, 2),                                       # stage 2 entry
    (4, 128, 512, 1, 1), (4, 512, 128, 1, 1), (4, 128, 128, 3, 1),                  # stage 2
]


def per_call_ms(fn, repeats=20) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def kernels(size, cin, cout, kernel, stride, dtype):
    """``(forward, input gradient, filter gradient)`` as compiled functions for one shape."""
    import tensorflow as tf

    x = tf.cast(tf.random.normal([BATCH, size, size, cin]), dtype)
    w = tf.cast(tf.random.normal([kernel, kernel, cin, cout]), dtype)
    dy = tf.cast(tf.random.normal(tf.nn.conv2d(x, w, stride, "SAME").shape), dtype)
    strides = [1, stride, stride, 1]
    forward = tf.function(lambda: tf.nn.conv2d(x, w, stride, "SAME"))
    input_grad = tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
        input_sizes=x.shape, filter=w, out_backprop=dy, strides=strides, padding="SAME"))
    filter_grad = tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=w.shape, out_backprop=dy, strides=strides, padding="SAME"))
    filter_grad_f32 = tf.function(lambda: tf.cast(tf.raw_ops.Conv2DBackpropFilter(
        input=tf.cast(x, tf.float32), filter_sizes=w.shape,
        out_backprop=tf.cast(dy, tf.float32), strides=strides, padding="SAME"), dtype))
    return forward, input_grad, filter_grad, filter_grad_f32


def main():
    import tensorflow as tf

    print("shape | bf16 forward / input grad / filter grad | float32 same | "
          "bf16 filter grad computed in float32  (ms per call)")
    for shape in SHAPES:
        bf16 = kernels(*shape, tf.bfloat16)
        f32 = kernels(*shape, tf.float32)
        size, cin, cout, kernel, stride = shape
        row = [f"{size}x{size} {cin}->{cout} k{kernel} s{stride}",
               " / ".join(f"{per_call_ms(f):.2f}" for f in bf16[:3]),
               " / ".join(f"{per_call_ms(f):.2f}" for f in f32[:3]),
               f"{per_call_ms(bf16[3]):.2f}"]
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
