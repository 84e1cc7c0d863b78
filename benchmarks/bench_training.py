"""Training throughput (images/s) at batch 128 on 32x32 images: the product's defaults against
plain Keras, in one run.

For ResNet-20 and ResNet-50 (zoo models, 8 classes) it measures:

- ``product``: what ``keras-resnet fit`` does by default: the ``load_data`` pipeline (cached
  ``shapes`` images, ``cifar`` augmentation, one-hot labels), precision ``auto``, TensorFlow's
  fused BatchNorm, small convolutions as matrix multiplies, ``steps_per_execution`` auto, SGD
  with the default schedule;
- ``naive``: the same model in float32 with ``model.compile(SGD, categorical_crossentropy)`` and
  ``model.fit`` on NumPy arrays: what a Keras user writes first;

and, as a second reference, ``keras.applications.ResNet50`` (weights=None) trained the naive
way. It prints images/s (wall clock) and CPU-seconds per 1,000 images for each, and the
product/naive ratios. The issue's target: product >= 2x naive float32 on this CPU.

``--pytorch`` adds the same two networks trained in plain PyTorch float32
(``benchmarks/pytorch_reference.py``; needs ``torch``, which the product does not depend on),
the issue's other yardstick, and checks that each has the zoo model's trainable parameter count.
Where the product trains in bfloat16 it also times PyTorch under bfloat16 autocast.

    python benchmarks/bench_training.py            # full: ~15 s timed per measurement
    python benchmarks/bench_training.py --quick    # smoke run: a few steps each
    python benchmarks/bench_training.py --pytorch  # also PyTorch's rate for the same networks
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH = 128
SIZE = 32
CLASSES = 8   # the most the built-in shapes data has; the same for every model here


def _timed_fit(model, fit_args: dict, steps: int, seconds: float) -> dict:
    """Warm up (trace + a few steps), then time whole fit calls until ``seconds`` pass."""
    model.fit(**fit_args, epochs=1, steps_per_epoch=min(steps, 4), verbose=0)
    images, wall, cpu = 0, 0.0, 0.0
    while images == 0 or wall < seconds:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        model.fit(**fit_args, epochs=1, steps_per_epoch=steps, verbose=0)
        wall += time.perf_counter() - start_wall
        cpu += time.process_time() - start_cpu
        images += steps * BATCH
    return {"images_per_s": images / wall, "cpu_s_per_1k_images": 1000 * cpu / images,
            "images": images}


def prepare_like_fit(config: dict, steps: int):
    """``(model, data, precision)`` as ``fit`` prepares them: the precision, the data pipeline,
    the model, the training speed-ups and the compiled optimizer."""
    import keras_resnet  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)

    from keras_resnet.training.fit import (build_model, compile_for_training,
                                           load_training_data)
    from keras_resnet.training.precision import apply_precision, choose_precision
    from keras_resnet.training.speedups import apply_training_speedups

    precision, _ = choose_precision(config["precision"])
    apply_precision(precision)
    data = load_training_data(config)
    model = build_model(config, data)
    apply_training_speedups(model, config)
    compile_for_training(model, config, steps)
    return model, data, precision


def measure_product(arch: str, steps: int, seconds: float) -> dict:
    import keras_resnet  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)

    import keras

    from keras_resnet.training.config import resolve_config

    config = resolve_config(None, {"arch": arch, "batch_size": BATCH, "epochs": 1,
                                   "data.spec": f"shapes:classes={CLASSES},train={BATCH * steps},"
                                                "val=0",
                                   "data.val_split": 0.0})
    model, data, precision = prepare_like_fit(config, steps)
    result = _timed_fit(model, {"x": data.train.repeat()}, steps, seconds)
    keras.mixed_precision.set_global_policy("float32")
    return dict(result, precision=precision, trainable_parameters=_trainable(model))


def _trainable(model) -> int:
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def _naive_arrays(steps: int):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (BATCH * steps, SIZE, SIZE, 3)).astype("float32")
    y = np.eye(CLASSES, dtype="float32")[rng.integers(0, CLASSES, BATCH * steps)]
    return x, y


def measure_naive(model_fn, steps: int, seconds: float) -> dict:
    import keras  # before keras_resnet: TensorFlow's own kernel choice, as a Keras user gets

    keras.mixed_precision.set_global_policy("float32")
    model = model_fn()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = _naive_arrays(steps)
    return dict(_timed_fit(model, {"x": x, "y": y, "batch_size": BATCH}, steps, seconds),
                precision="float32", trainable_parameters=_trainable(model))


def _naive_model(arch: str):
    import keras

    if arch == "keras.applications.ResNet50":
        return keras.applications.ResNet50(weights=None, input_shape=(SIZE, SIZE, 3),
                                           classes=CLASSES)
    from keras_resnet.models import create_model

    return create_model(arch, num_classes=CLASSES, input_shape=(SIZE, SIZE, 3))


def measure(kind: str, arch: str, steps: int, seconds: float) -> dict:
    """One row, in this process (which must be fresh: see the module's docstring)."""
    if kind in ("pytorch", "pytorch-bf16"):
        from pytorch_reference import measure as measure_pytorch

        return measure_pytorch(arch, CLASSES, BATCH, SIZE, steps, seconds,
                               "bfloat16" if kind == "pytorch-bf16" else "float32")
    if kind == "product":
        row = measure_product(arch, steps, seconds)
    else:
        row = measure_naive(lambda: _naive_model(arch), steps, seconds)
    from keras_resnet.runtime import onednn_enabled

    return dict(row, onednn=onednn_enabled())


def json_from_fresh_process(args: list[str], what: str):
    """``python ARGS`` in a fresh process (measurements must not share one TensorFlow runtime
    or its settings); returns the JSON on the last line it printed, or exits naming ``what``
    with the end of its error output. The benchmark scripts share it."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure_in_fresh_process(kind: str, arch: str, steps: int, seconds: float) -> dict:
    return json_from_fresh_process([__file__, "--measure", kind, arch, "--steps", str(steps),
                                    "--seconds", str(seconds)], f"{kind} {arch}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps each")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="timed seconds per measurement (full run)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--pytorch", action="store_true",
                        help="also train the same networks in plain PyTorch float32")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "ARCH"),
                        help=argparse.SUPPRESS)  # one row, in a child process
    parser.add_argument("--steps", type=int, default=48, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure, args.steps, args.seconds)))
        return

    # 48 steps per fit call: a new iterator every call costs the product's tf.data pipeline
    # a refill, which real epochs (hundreds of steps) pay once.
    steps = 2 if args.quick else 48
    seconds = 0.0 if args.quick else args.seconds
    if args.pytorch:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise SystemExit("error: --pytorch needs torch (pip install torch)") from None
    rows = {}
    for arch in ("resnet20", "resnet50"):
        rows[f"{arch} product"] = _measure_in_fresh_process("product", arch, steps, seconds)
        rows[f"{arch} naive"] = _measure_in_fresh_process("naive", arch, steps, seconds)
        if args.pytorch:
            rows[f"{arch} pytorch"] = _measure_in_fresh_process("pytorch", arch, steps, seconds)
            if rows[f"{arch} product"]["precision"] == "mixed_bfloat16":
                rows[f"{arch} pytorch-bf16"] = _measure_in_fresh_process("pytorch-bf16", arch,
                                                                          steps, seconds)
    rows["keras.applications.ResNet50 naive"] = _measure_in_fresh_process(
        "naive", "keras.applications.ResNet50", steps, seconds)

    print(f"\nTraining throughput, batch {BATCH}, {SIZE}x{SIZE}, {os.cpu_count()} CPUs"
          + (" (QUICK: not a measurement)" if args.quick else ""))
    print(f"{'':38} {'precision':>15} {'kernels':>8} {'images/s':>9} {'CPU s/1k img':>13}")
    for name, row in rows.items():
        kernels = {True: "oneDNN", False: "Eigen"}.get(row["onednn"], "?")
        if "framework" in row:
            kernels = "PyTorch"
        print(f"{name:38} {row['precision']:>15} {kernels:>8} {row['images_per_s']:9.0f} "
              f"{row['cpu_s_per_1k_images']:13.2f}")
    ratios = {}
    for arch in ("resnet20", "resnet50"):
        product, naive = rows[f"{arch} product"], rows[f"{arch} naive"]
        ratios[arch] = {
            "wall": product["images_per_s"] / naive["images_per_s"],
            "cpu": naive["cpu_s_per_1k_images"] / product["cpu_s_per_1k_images"],
        }
        print(f"{arch}: product / naive float32 = {ratios[arch]['wall']:.2f}x images/s "
              f"({ratios[arch]['cpu']:.2f}x per CPU-second)")
        if args.pytorch:
            torch_row = rows[f"{arch} pytorch"]
            if torch_row["trainable_parameters"] != product["trainable_parameters"]:
                raise SystemExit(f"error: the PyTorch {arch} has "
                                 f"{torch_row['trainable_parameters']:,} trainable parameters, "
                                 f"the zoo's {product['trainable_parameters']:,}")
            ratios[arch]["pytorch_wall"] = torch_row["images_per_s"] / naive["images_per_s"]
            ratios[arch]["pytorch_cpu"] = (naive["cpu_s_per_1k_images"]
                                           / torch_row["cpu_s_per_1k_images"])
            ratios[arch]["product_over_pytorch_cpu"] = (torch_row["cpu_s_per_1k_images"]
                                                        / product["cpu_s_per_1k_images"])
            print(f"{arch}: PyTorch float32 / naive float32 = "
                  f"{ratios[arch]['pytorch_wall']:.2f}x images/s "
                  f"({ratios[arch]['pytorch_cpu']:.2f}x per CPU-second); product / PyTorch = "
                  f"{ratios[arch]['product_over_pytorch_cpu']:.2f}x per CPU-second "
                  f"({torch_row['trainable_parameters']:,} trainable parameters each)")
            if f"{arch} pytorch-bf16" in rows:
                bf16 = rows[f"{arch} pytorch-bf16"]
                ratios[arch]["product_over_pytorch_bf16_cpu"] = (
                    bf16["cpu_s_per_1k_images"] / product["cpu_s_per_1k_images"])
                print(f"{arch}: product / PyTorch bfloat16 autocast = "
                      f"{ratios[arch]['product_over_pytorch_bf16_cpu']:.2f}x per CPU-second")
    apps = rows["keras.applications.ResNet50 naive"]["images_per_s"]
    print(f"resnet50 product / keras.applications.ResNet50 naive = "
          f"{rows['resnet50 product']['images_per_s'] / apps:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
