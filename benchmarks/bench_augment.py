"""CPU time of the crop-and-flip augmentation per 1,000 images: Keras's ``RandomTranslation``
(nearest sampling) + ``RandomFlip``, which give the ``crop``/``reflect`` and ``flip`` switches'
pixels, against the one gather the product uses (``keras_resnet.data.shift_flip``), alternating
in one process on the same uint8 batches.

    python benchmarks/bench_augment.py                 # batch 128, 32x32, shifts of 4, zeros
    python benchmarks/bench_augment.py --batch 512 --padding 2 --fill reflect
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def keras_layers(padding: int, fill: str, size: int, seed: int):
    import keras

    factor = (padding + 0.5) / size       # every whole-pixel shift equally likely
    return [keras.layers.RandomTranslation(factor, factor, fill_mode=fill, fill_value=0.0,
                                           interpolation="nearest", seed=seed),
            keras.layers.RandomFlip("horizontal", seed=seed + 1)]


def gather_layers(padding: int, fill: str, size: int, seed: int):
    from keras_resnet.data.shift_flip import RandomShiftFlip

    return [RandomShiftFlip(padding, fill_mode=fill, flip=True, seed=seed)]


def compiled(layers):
    import tensorflow as tf

    @tf.function
    def augment(images):
        images = tf.cast(images, tf.float32)
        for layer in layers:
            images = layer(images, training=True)
        return images

    return augment


def cpu_ms_per_1k(augment, images, calls: int) -> float:
    start = time.process_time()
    for _ in range(calls):
        augment(images)
    return 1e6 * (time.process_time() - start) / (calls * int(images.shape[0]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--padding", type=int, default=4)
    parser.add_argument("--fill", choices=("constant", "reflect"), default="constant")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100, help="calls per timed round")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    images = tf.constant(np.random.default_rng(0).integers(
        0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8))
    ways = {"keras RandomTranslation+RandomFlip": keras_layers,
            "one gather (RandomShiftFlip)": gather_layers}
    augments = {name: compiled(build(args.padding, args.fill, args.size, seed=0))
                for name, build in ways.items()}
    for augment in augments.values():
        for _ in range(5):
            augment(images)                                     # trace and warm up
    figures = {name: [] for name in augments}
    for _ in range(args.rounds):
        for name, augment in augments.items():
            figures[name].append(cpu_ms_per_1k(augment, images, args.calls))
    print(f"batch {args.batch}, {args.size}x{args.size}, shifts up to {args.padding} "
          f"({args.fill} fill) + flip, {os.cpu_count()} CPUs; CPU ms per 1,000 images, "
          f"{args.rounds} alternating rounds of {args.calls} calls")
    for name, values in figures.items():
        print(f"  {name:36} median {statistics.median(values):6.1f}  "
              f"({', '.join(f'{v:.1f}' for v in values)})")
    keras_name, gather_name = augments
    ratios = [k / g for k, g in zip(figures[keras_name], figures[gather_name])]
    print(f"  keras / gather: median {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
