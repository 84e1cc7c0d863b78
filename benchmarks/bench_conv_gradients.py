"""Milliseconds per call of TensorFlow's convolution kernels (forward, input gradient, filter
gradient) in bfloat16 and float32, the bfloat16 filter gradient computed in float32 (cast in,
cast out), and, for stride 1, computed as one matrix multiply per kernel tap
(``keras_resnet.training.filter_gradients``, the ``matmul_filter_gradients`` speed-up).

Shape sets: ``resnet50`` (the default), ResNet-50's stem, stage-1 and stage-2 shapes at 32x32
input, batch 128 (stages 3 and 4 have 2x2 and 1x1 maps there and already train as matrix
multiplies: ``keras_resnet.training.small_convs``); ``airbench95``, that network's
convolutions after the whitening stem, batch 512; ``resnet20``, the CIFAR ResNet-20's stem and
3x3 convolutions (16, 32, 64 channels), batch 128.

    python benchmarks/bench_conv_gradients.py
    python benchmarks/bench_conv_gradients.py --shapes airbench95
    python benchmarks/bench_conv_gradients.py --shapes resnet20
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> (batch, [(input size, in channels, out channels, kernel, stride), ...])
SHAPE_SETS = {"resnet50": (128, [   # ResNet-50 v1.5 at 32x32
    (32, 3, 64, 7, 2),                        # stem
    (8, 64, 64, 1, 1), (8, 64, 64, 3, 1), (8, 64, 256, 1, 1), (8, 256, 64, 1, 1),   # stage 1
    (8, 256, 128, 1, 1), (8, 128, 128, 3, 2),                                       # stage 2 entry
    (4, 128, 512, 1, 1), (4, 512, 128, 1, 1), (4, 128, 128, 3, 1),                  # stage 2
]), "airbench95": (512, [
    (31, 24, 128, 3, 1), (15, 128, 128, 3, 1),     # stage 1 (conv, pool, conv)
    (15, 128, 384, 3, 1), (7, 384, 384, 3, 1),     # stage 2
    (7, 384, 512, 3, 1), (3, 512, 512, 3, 1),      # stage 3
]), "resnet20": (128, [
    (32, 3, 16, 3, 1),                             # stem
    (32, 16, 16, 3, 1), (32, 16, 32, 3, 2),        # stage 1, stage 2 entry
    (16, 32, 32, 3, 1), (16, 32, 64, 3, 2),        # stage 2, stage 3 entry
    (8, 64, 64, 3, 1),                             # stage 3
])}


def per_call_ms(fn, repeats=20) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def kernels(batch, size, cin, cout, kernel, stride, dtype):
    """``(forward, input gradient, filter gradient, filter gradient in float32, filter gradient
    as per-tap products or None)`` as compiled functions for one shape."""
    import tensorflow as tf

    from keras_resnet.training.filter_gradients import filter_gradient

    x = tf.cast(tf.random.normal([batch, size, size, cin]), dtype)
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
    pad = [[0, 0], [(kernel - 1) // 2, kernel // 2], [(kernel - 1) // 2, kernel // 2], [0, 0]]
    per_tap = tf.function(lambda: filter_gradient(x, dy, w.shape, pad, dy.shape[1:3]))
    return forward, input_grad, filter_grad, filter_grad_f32, per_tap if stride == 1 else None


def main(argv=None):
    import tensorflow as tf

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", choices=sorted(SHAPE_SETS), default="resnet50")
    args = parser.parse_args(argv)
    batch, shapes = SHAPE_SETS[args.shapes]
    print(f"batch {batch}. shape | bf16 forward / input grad / filter grad | float32 same | "
          "bf16 filter grad computed in float32 | as per-tap matmuls  (ms per call)")
    for shape in shapes:
        bf16 = kernels(batch, *shape, tf.bfloat16)
        f32 = kernels(batch, *shape, tf.float32)
        size, cin, cout, kernel, stride = shape
        row = [f"{size}x{size} {cin}->{cout} k{kernel} s{stride}",
               " / ".join(f"{per_call_ms(f):.2f}" for f in bf16[:3]),
               " / ".join(f"{per_call_ms(f):.2f}" for f in f32[:3]),
               f"{per_call_ms(bf16[3]):.2f}",
               "-" if bf16[4] is None else f"{per_call_ms(bf16[4]):.2f}"]
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
