"""Input pipeline vs training throughput, on the same machine in the same run.

Pipeline: ``load_data`` on the 50,000 real CIFAR-10 JPEGs of ``../shared/datasets/cifar10/train``
with the ``cifar`` augmentation (pad 4 + random crop + flip), no cache, so every image is read,
decoded, augmented and batched: images/s over one full pass. The one-time bad-file scan is
timed separately.

Training: ResNet-20 (``keras_resnet.models.create_model("resnet20")``), batch 128, 32x32,
SGD with momentum, ``model.fit`` on batches already in memory (so nothing waits for input),
timed over a few dozen steps after a warm-up, in float32 and mixed_bfloat16; the faster one
is the figure to beat.

The ratio pipeline / training says how many times over the pipeline can feed the model
(target: at least 5x, so input never stalls training even while both share the CPU).

    python benchmarks/bench_pipeline.py            # full: all 50,000 images
    python benchmarks/bench_pipeline.py --quick    # smoke run: 1,000 images, a few steps
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
CIFAR10_TRAIN = REPO.parent / "shared" / "datasets" / "cifar10" / "train"
sys.path.insert(0, str(REPO))


def subset_folder(dest: Path, per_class: int) -> Path:
    """A class folder of symlinks to the first ``per_class`` JPEGs of each class."""
    for class_dir in sorted(p for p in CIFAR10_TRAIN.iterdir() if p.is_dir()):
        (dest / class_dir.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(class_dir.glob("*.jpg"))[:per_class]:
            (dest / class_dir.name / f.name).symlink_to(f)
    return dest


def measure_pipeline(folder: Path, batch_size: int, augment: str) -> dict:
    from keras_resnet.data import load_data

    start = time.perf_counter()
    data = load_data(str(folder), batch_size=batch_size, val_split=0.0, augment=augment,
                     cache=False)
    scan_s = time.perf_counter() - start
    images = 0
    start = time.perf_counter()
    for x, _ in data.train:
        images += int(x.shape[0])
    elapsed = time.perf_counter() - start
    return {"images": images, "scan_s": round(scan_s, 2), "pass_s": round(elapsed, 2),
            "images_per_s": round(images / elapsed, 1), "augment": augment,
            "bad_files": len(data.bad_files)}


def measure_training(precision: str, batch_size: int, warmup: int, steps: int,
                     steps_per_execution: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_resnet.models import create_model

    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        model = create_model("resnet20", num_classes=10, input_shape=(32, 32, 3))
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss="sparse_categorical_crossentropy",
                      steps_per_execution=steps_per_execution)
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (batch_size, 32, 32, 3)).astype(np.float32)
        y = rng.integers(0, 10, batch_size).astype(np.int32)
        batches = tf.data.Dataset.from_tensors((x, y)).repeat()
        model.fit(batches, epochs=1, steps_per_epoch=warmup, verbose=0, shuffle=False)
        start = time.perf_counter()
        model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
        elapsed = time.perf_counter() - start
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return {"precision": precision, "steps": steps, "seconds": round(elapsed, 2),
            "images_per_s": round(steps * batch_size / elapsed, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 100 images per class and a few training steps")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--augment", default="cifar")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps")
    parser.add_argument("--steps-per-execution", type=int, default=8)
    parser.add_argument("--precision", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    if not CIFAR10_TRAIN.is_dir():
        parser.error(f"CIFAR-10 JPEGs not found at {CIFAR10_TRAIN}")

    import tensorflow as tf

    steps = args.steps or (16 if args.quick else 48)
    warmup = 4 if args.quick else 16
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        folder = subset_folder(Path(tmp) / "cifar", 100) if args.quick else CIFAR10_TRAIN
        pipeline = measure_pipeline(folder, args.batch_size, args.augment)
    print(f"pipeline: {pipeline['images']} images, decode + '{pipeline['augment']}' "
          f"augmentation: {pipeline['images_per_s']:,.0f} images/s "
          f"(one pass {pipeline['pass_s']} s; bad-file scan {pipeline['scan_s']} s, once)")
    training = []
    for precision in args.precision:
        result = measure_training(precision, args.batch_size, warmup, steps,
                                  args.steps_per_execution)
        training.append(result)
        print(f"training: ResNet-20, batch {args.batch_size}, {precision}: "
              f"{result['images_per_s']:,.0f} images/s ({steps} steps in {result['seconds']} s)")
    fastest = max(training, key=lambda r: r["images_per_s"])
    ratio = pipeline["images_per_s"] / fastest["images_per_s"]
    print(f"ratio: pipeline / training ({fastest['precision']}) = {ratio:.1f}x "
          f"({'meets' if ratio >= 5 else 'below'} the 5x target)")
    if args.json:
        args.json.write_text(json.dumps({"pipeline": pipeline, "training": training,
                                         "ratio": round(ratio, 2), "quick": args.quick},
                                        indent=2))


if __name__ == "__main__":
    main()
