"""Time to accuracy on CIFAR-10: train a recipe from ``configs/`` on 45,000 images of
``../shared/datasets/cifar10/train`` and validate on the other 5,000 (stratified, seed 0).

Records, per epoch, the wall time since the start of ``fit`` and the validation accuracy, and
reports when the run first reached each target (91% by default, the goal being 60 minutes;
93% is the stretch goal), the final accuracy and the total time. After training (and outside
the timed part) the final model is also scored on the validation images with flip
test-time augmentation (the mean of each image's and its mirror's probabilities) and with
``flip-translate`` (also the mirror pairs shifted by one pixel), through
``keras_resnet.evaluate``. Everything lands in the run
directory: the usual files plus ``time_to_accuracy.json`` and ``time_to_accuracy.csv``; its
``config.yaml`` reproduces the run with one command (printed at the end).

    python benchmarks/bench_cifar10.py                        # cifar10_fast, full data
    python benchmarks/bench_cifar10.py --config cifar10_he2016
    python benchmarks/bench_cifar10.py --quick                # smoke run: 50 images/class
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CIFAR10_TRAIN = REPO.parent / "shared" / "datasets" / "cifar10" / "train"


def subset(source: Path, dest: Path, per_class: int) -> Path:
    """A class-folder dataset of symlinks to the first ``per_class`` images of each class."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (dest / folder.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.glob("*.jpg"))[:per_class]:
            (dest / folder.name / image.name).symlink_to(image)
    return dest


def time_to_accuracy_callback(started: float):
    import keras

    class Recorder(keras.callbacks.Callback):
        """Wall seconds since ``started`` and the val accuracy at the end of each epoch."""

        def __init__(self):
            super().__init__()
            self.points = []

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.points.append({"epoch": epoch + 1,
                                "seconds": round(time.perf_counter() - started, 1),
                                "val_accuracy": float(logs.get("val_accuracy", float("nan"))),
                                "accuracy": float(logs.get("accuracy", float("nan")))})

    return Recorder()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="cifar10_fast", help="recipe in configs/ or a YAML")
    parser.add_argument("--data", type=Path, default=CIFAR10_TRAIN, help="CIFAR-10 train folder")
    parser.add_argument("--output", type=Path, help="run directory (default runs/bench-...)")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.91, 0.93])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 50 images per class, 2 epochs")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. epochs=40")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"error: no CIFAR-10 folder at {args.data}")

    from keras_resnet.training.config import parse_overrides
    from keras_resnet.training.fit import fit

    overrides = {"data.spec": str(args.data.resolve()), "data.val_split": 0.1}
    scratch = None
    if args.quick:
        scratch = tempfile.TemporaryDirectory(prefix="bench-cifar10-")
        overrides["data.spec"] = str(subset(args.data, Path(scratch.name) / "data", 50))
        overrides.update({"epochs": 2, "verbose": 2})
    overrides.update(parse_overrides(args.overrides))
    name = Path(str(args.config)).stem
    output = args.output or REPO / "runs" / f"bench-{name}-{time.strftime('%Y%m%d-%H%M%S')}"

    started = time.perf_counter()
    recorder = time_to_accuracy_callback(started)
    result = fit(args.config, output=output, overrides=overrides, callbacks=[recorder])
    total = time.perf_counter() - started
    run = Path(result.run_dir)

    from keras_resnet.data import load_data
    from keras_resnet.evaluation import evaluate

    # The held-out images the run validated on, decoded once for the three scorings.
    held_out = load_data(overrides["data.spec"], batch_size=256,
                         image_size=tuple(result.model.input_shape[1:3]), val_split=0.1,
                         seed=result.config["data"]["split_seed"], augment=None, cache=False)
    images, labels = held_out.numpy("val")
    scored = {tta: evaluate(run / "model.keras", (images, labels, held_out.class_names),
                            tta=tta, batch_size=256)["accuracy"]
              for tta in ("none", "flip", "flip-translate")}

    reached = {}
    for target in args.targets:
        first = next((p for p in recorder.points if p["val_accuracy"] >= target), None)
        reached[f"{target:.2f}"] = first
    report = {
        "recipe": str(args.config),
        "data": overrides["data.spec"],
        "train_images": result.metrics.get("train_images"),
        "quick": args.quick,
        "total_seconds": round(total, 1),
        "final_val_accuracy": result.metrics.get("val_accuracy"),
        "rescored_val_accuracy": scored["none"],
        "flip_tta_val_accuracy": scored["flip"],
        "flip_translate_tta_val_accuracy": scored["flip-translate"],
        "best": result.metrics.get("best"),
        "images_per_second": result.metrics.get("images_per_second"),
        "precision": result.metrics.get("precision"),
        "time_to_target": reached,
        "curve": recorder.points,
    }
    (run / "time_to_accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    with (run / "time_to_accuracy.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "seconds", "val_accuracy",
                                                    "accuracy"])
        writer.writeheader()
        writer.writerows(recorder.points)

    print(f"\nCIFAR-10 time to accuracy: recipe {args.config}"
          + (" (QUICK: not a measurement)" if args.quick else ""))
    print(f"  {'epoch':>5} {'minutes':>8} {'val_acc':>8}")
    for point in recorder.points:
        print(f"  {point['epoch']:>5} {point['seconds'] / 60:8.1f} {point['val_accuracy']:8.4f}")
    for target, point in reached.items():
        when = (f"epoch {point['epoch']}, {point['seconds'] / 60:.1f} min" if point
                else "not reached")
        print(f"  val accuracy >= {target}: {when}")
    print(f"  final val accuracy {report['final_val_accuracy']:.4f} after "
          f"{total / 60:.1f} min ({report['images_per_second']} images/s, "
          f"{report['precision']})")
    print(f"  model.keras re-scored on the validation images: {scored['none']:.4f}, "
          f"with flip TTA {scored['flip']:.4f}, with flip-translate TTA "
          f"{scored['flip-translate']:.4f}")
    print(f"  run directory: {run}")
    print(f"  reproduce: keras-resnet fit --config {run / 'config.yaml'} --output NEW_DIR")
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
