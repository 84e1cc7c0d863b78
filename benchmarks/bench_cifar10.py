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

``--members N`` spends the same budget on an ensemble instead: N runs of the recipe one after
the other (seeds ``seed``, ``seed + 1``, ...; each gets ``time_budget_minutes / N`` when the
recipe trains to a budget), each in ``OUTPUT/member-K/``, scored alone and together (the mean
of their probabilities, as ``keras-resnet evaluate`` scores several models), with the total
wall time of all N runs. The ensemble's report is ``OUTPUT/time_to_accuracy.json``.

    python benchmarks/bench_cifar10.py                        # cifar10_fast, full data
    python benchmarks/bench_cifar10.py --config cifar10_he2016
    python benchmarks/bench_cifar10.py --config cifar10_airbench95 --members 2
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


TTA_MODES = ("none", "flip", "flip-translate")


def train(config, output: Path, overrides: dict, targets) -> dict:
    """One timed ``fit`` of ``config``; its time-to-accuracy report, also written into the run."""
    from keras_resnet.training.fit import fit

    started = time.perf_counter()
    recorder = time_to_accuracy_callback(started)
    result = fit(config, output=output, overrides=overrides, callbacks=[recorder])
    total = time.perf_counter() - started
    run = Path(result.run_dir)
    reached = {}
    for target in targets:
        first = next((p for p in recorder.points if p["val_accuracy"] >= target), None)
        reached[f"{target:.2f}"] = first
    report = {
        "recipe": str(config),
        "run": str(run),
        "seed": result.config["seed"],
        "data": overrides["data.spec"],
        "train_images": result.metrics.get("train_images"),
        "total_seconds": round(total, 1),
        "epochs": result.metrics.get("epochs"),
        "final_val_accuracy": result.metrics.get("val_accuracy"),
        "best": result.metrics.get("best"),
        "images_per_second": result.metrics.get("images_per_second"),
        "precision": result.metrics.get("precision"),
        "time_to_target": reached,
        "curve": recorder.points,
        "split_seed": result.config["data"]["split_seed"],
        "image_size": tuple(result.model.input_shape[1:3]),
    }
    with (run / "time_to_accuracy.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "seconds", "val_accuracy",
                                                    "accuracy"])
        writer.writeheader()
        writer.writerows(recorder.points)
    return report


def held_out_images(spec: str, report: dict):
    """The 5,000 images the run validated on, decoded once for every scoring."""
    from keras_resnet.data import load_data

    held_out = load_data(spec, batch_size=256, image_size=report["image_size"], val_split=0.1,
                         seed=report["split_seed"], augment=None, cache=False)
    images, labels = held_out.numpy("val")
    return images, labels, held_out.class_names


def score(models, held_out) -> dict:
    """Accuracy per TTA mode: of the model, or of the ensemble and of each member."""
    from keras_resnet.evaluation import evaluate

    scored = {}
    for tta in TTA_MODES:
        report = evaluate(models, held_out, tta=tta, batch_size=256)
        scored[tta] = {"accuracy": report["accuracy"],
                       "members": [m["accuracy"] for m in report.get("models", [])]}
    return scored


def print_curve(report: dict) -> None:
    print(f"  {'epoch':>5} {'minutes':>8} {'val_acc':>8}")
    for point in report["curve"]:
        print(f"  {point['epoch']:>5} {point['seconds'] / 60:8.1f} {point['val_accuracy']:8.4f}")


def public(report: dict) -> dict:
    """The report without what ``train`` keeps only for re-loading the held-out images."""
    return {k: v for k, v in report.items() if k not in ("split_seed", "image_size")}


def write_report(path: Path, report: dict) -> None:
    path.write_text(json.dumps(public(report), indent=2) + "\n")


def run_single(args, overrides: dict, output: Path) -> None:
    report = train(args.config, output, overrides, args.targets)
    scored = score(Path(report["run"]) / "model.keras", held_out_images(overrides["data.spec"], report))
    report.update({"quick": args.quick,
                   "rescored_val_accuracy": scored["none"]["accuracy"],
                   "flip_tta_val_accuracy": scored["flip"]["accuracy"],
                   "flip_translate_tta_val_accuracy": scored["flip-translate"]["accuracy"]})
    write_report(output / "time_to_accuracy.json", report)

    print(f"\nCIFAR-10 time to accuracy: recipe {args.config}"
          + (" (QUICK: not a measurement)" if args.quick else ""))
    print_curve(report)
    for target, point in report["time_to_target"].items():
        when = (f"epoch {point['epoch']}, {point['seconds'] / 60:.1f} min" if point
                else "not reached")
        print(f"  val accuracy >= {target}: {when}")
    print(f"  final val accuracy {report['final_val_accuracy']:.4f} after "
          f"{report['total_seconds'] / 60:.1f} min ({report['images_per_second']} images/s, "
          f"{report['precision']})")
    print(f"  model.keras re-scored on the validation images: {scored['none']['accuracy']:.4f}, "
          f"with flip TTA {scored['flip']['accuracy']:.4f}, with flip-translate TTA "
          f"{scored['flip-translate']['accuracy']:.4f}")
    print(f"  run directory: {output}")
    print(f"  reproduce: keras-resnet fit --config {output / 'config.yaml'} --output NEW_DIR")


def run_ensemble(args, overrides: dict, output: Path) -> None:
    """``--members N``: N runs sharing the recipe's budget, then scored as an ensemble."""
    import keras

    from keras_resnet.training.config import resolve_config

    resolved = resolve_config(args.config, overrides)
    budget = resolved.get("time_budget_minutes")
    if budget is not None:
        overrides["time_budget_minutes"] = budget / args.members
    started = time.perf_counter()
    members = []
    for k in range(args.members):
        member_overrides = dict(overrides, seed=resolved["seed"] + k)
        members.append(train(args.config, output / f"member-{k + 1}", member_overrides,
                             args.targets))
        keras.backend.clear_session()
    total = time.perf_counter() - started
    scored = score([Path(m["run"]) / "model.keras" for m in members],
                   held_out_images(overrides["data.spec"], members[0]))
    for k, member in enumerate(members):
        member.update({"rescored_val_accuracy": scored["none"]["members"][k],
                       "flip_tta_val_accuracy": scored["flip"]["members"][k],
                       "flip_translate_tta_val_accuracy": scored["flip-translate"]["members"][k]})
        write_report(Path(member["run"]) / "time_to_accuracy.json", member)
    report = {
        "recipe": str(args.config),
        "members": args.members,
        "quick": args.quick,
        "member_time_budget_minutes": overrides.get("time_budget_minutes"),
        "total_seconds": round(total, 1),
        "ensemble_val_accuracy": scored["none"]["accuracy"],
        "ensemble_flip_tta_val_accuracy": scored["flip"]["accuracy"],
        "ensemble_flip_translate_tta_val_accuracy": scored["flip-translate"]["accuracy"],
        "runs": [public(m) for m in members],
    }
    write_report(output / "time_to_accuracy.json", report)

    print(f"\nCIFAR-10 time to accuracy: an ensemble of {args.members} runs of {args.config}"
          + (" (QUICK: not a measurement)" if args.quick else ""))
    for k, member in enumerate(members):
        print(f"member {k + 1} (seed {member['seed']}): {member['epochs']} epochs, "
              f"{member['total_seconds'] / 60:.1f} min")
        print_curve(member)
        print(f"  alone: {member['rescored_val_accuracy']:.4f}, with flip TTA "
              f"{member['flip_tta_val_accuracy']:.4f}, with flip-translate TTA "
              f"{member['flip_translate_tta_val_accuracy']:.4f}")
    print(f"  ensemble of {args.members} after {total / 60:.1f} min of training: "
          f"{scored['none']['accuracy']:.4f}, with flip TTA {scored['flip']['accuracy']:.4f}, "
          f"with flip-translate TTA {scored['flip-translate']['accuracy']:.4f}")
    print(f"  run directory: {output}")
    print(f"  score again: keras-resnet evaluate {output}/member-*/model.keras --data "
          f"{overrides['data.spec']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="cifar10_fast", help="recipe in configs/ or a YAML")
    parser.add_argument("--data", type=Path, default=CIFAR10_TRAIN, help="CIFAR-10 train folder")
    parser.add_argument("--output", type=Path, help="run directory (default runs/bench-...)")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.91, 0.93])
    parser.add_argument("--members", type=int, default=1,
                        help="train this many runs within the budget and score their ensemble")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 50 images per class, 2 epochs")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. epochs=40")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"error: no CIFAR-10 folder at {args.data}")
    if args.members < 1:
        sys.exit(f"error: --members must be at least 1, not {args.members}")

    from keras_resnet.training.config import parse_overrides

    overrides = {"data.spec": str(args.data.resolve()), "data.val_split": 0.1}
    scratch = None
    if args.quick:
        scratch = tempfile.TemporaryDirectory(prefix="bench-cifar10-")
        overrides["data.spec"] = str(subset(args.data, Path(scratch.name) / "data", 50))
        overrides.update({"epochs": 2, "verbose": 2})
    overrides.update(parse_overrides(args.overrides))
    name = Path(str(args.config)).stem
    output = args.output or REPO / "runs" / f"bench-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.members == 1:
        run_single(args, overrides, output)
    else:
        run_ensemble(args, overrides, output)
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
