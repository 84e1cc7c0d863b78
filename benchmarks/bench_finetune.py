"""Fine-tuning on held-out classes: does a pretrained ResNet beat training from scratch?

1. Pretrain a ResNet-20 on the six animal classes of CIFAR-10 (bird, cat, deer, dog, frog,
   horse) from ``../shared/datasets/cifar10/train``.
2. Fine-tune it (``keras_resnet.finetune``: new head on the frozen backbone, then the whole
   network at a lower learning rate) on the four vehicle classes (airplane, automobile, ship,
   truck), using only 100 images per class.
3. Train the same network from scratch (``keras_resnet.fit``) on the same 400 images for the
   same number of epochs (the same number of optimizer steps; fine-tuning's head phase costs
   less per step, so scratch gets at least the compute fine-tuning gets).

Both validate on 200 other images of each vehicle class (800 images never trained on). Each
comparison runs with several seeds; the table gives final-epoch validation accuracy (no
checkpoint picked on the validation set) as mean and per seed.

    python benchmarks/bench_finetune.py            # full: ~10-15 min of pretraining on 2 cores
    python benchmarks/bench_finetune.py --quick    # minutes: checks that it runs
    python benchmarks/bench_finetune.py --json results.json --workdir /tmp/ftbench

The data folders are symlinks to the shared JPEGs (nothing is copied). Run it on a quiet
machine: the wall times are only meaningful there (accuracy does not depend on it).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
CIFAR10_TRAIN = REPO.parent / "shared" / "datasets" / "cifar10" / "train"
ANIMALS = ["bird", "cat", "deer", "dog", "frog", "horse"]
VEHICLES = ["airplane", "automobile", "ship", "truck"]
ARCH = "resnet20"
# The full run fails (exit 1) unless fine-tuning beats scratch by at least this much.
CLEARLY_AHEAD_POINTS = 5.0

# Every setting of the comparison, in one place (printed and saved with the results).
RECIPES = {
    "full": {
        "pretrain": {"per_class": 4500, "val_per_class": 500, "epochs": 15, "batch_size": 128,
                     "optimizer.lr": 0.2, "optimizer.weight_decay": 5e-4,
                     "schedule.name": "onecycle", "data.augment": "cifar"},
        "target": {"train_per_class": 100, "val_per_class": 200, "val_offset": 4000},
        "finetune": {"head_epochs": 5, "epochs": 25, "head_lr": 0.05, "lr": 0.02,
                     "freeze": "none", "stage_lr_decay": 1.0},
        "scratch": {"epochs": 30, "lr": 0.1},
        "common": {"batch_size": 32, "optimizer.weight_decay": 5e-4, "data.augment": "cifar"},
        "seeds": [0, 1, 2],
    },
    "quick": {
        "pretrain": {"per_class": 200, "val_per_class": 50, "epochs": 2, "batch_size": 128,
                     "optimizer.lr": 0.2, "optimizer.weight_decay": 5e-4,
                     "schedule.name": "onecycle", "data.augment": "cifar"},
        "target": {"train_per_class": 100, "val_per_class": 50, "val_offset": 4000},
        "finetune": {"head_epochs": 1, "epochs": 2, "head_lr": 0.05, "lr": 0.02,
                     "freeze": "none", "stage_lr_decay": 1.0},
        "scratch": {"epochs": 3, "lr": 0.1},
        "common": {"batch_size": 32, "optimizer.weight_decay": 5e-4, "data.augment": "cifar"},
        "seeds": [0],
    },
}


def link_images(dest: Path, classes, start: int, count: int) -> Path:
    """``dest/CLASS/*.jpg``: symlinks to images ``start .. start+count`` of each class."""
    for name in classes:
        files = sorted((CIFAR10_TRAIN / name).glob("*.jpg"))[start:start + count]
        if len(files) < count:
            raise SystemExit(f"only {len(files)} images of {name} from {start} in {CIFAR10_TRAIN}")
        folder = dest / name
        folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            (folder / path.name).symlink_to(path)
    return dest


def prepare_data(workdir: Path, recipe: dict) -> tuple[Path, Path]:
    """The animal pretraining set and the vehicle set, each with ``train/`` and ``val/``."""
    pre, target = recipe["pretrain"], recipe["target"]
    animals, vehicles = workdir / "animals", workdir / "vehicles"
    for folder in (animals, vehicles):
        shutil.rmtree(folder, ignore_errors=True)
    link_images(animals / "train", ANIMALS, 0, pre["per_class"])
    link_images(animals / "val", ANIMALS, 5000 - pre["val_per_class"], pre["val_per_class"])
    link_images(vehicles / "train", VEHICLES, 0, target["train_per_class"])
    link_images(vehicles / "val", VEHICLES, target["val_offset"], target["val_per_class"])
    return animals, vehicles


def final_accuracy(result) -> float:
    return float(result.history[-1]["val_accuracy"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget: checks that it runs")
    parser.add_argument("--workdir", type=Path, help="where runs go (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--pretrained", type=Path,
                        help="reuse this pretrained model (.keras or run dir): skip step 1")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds of the comparison runs")
    args = parser.parse_args(argv)

    import keras_resnet

    mode = "quick" if args.quick else "full"
    recipe = dict(RECIPES[mode])
    if args.seeds:
        recipe["seeds"] = args.seeds
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for run in ("pretrain", "finetune-*", "scratch-*"):
        for path in workdir.glob(run):
            if args.pretrained is None or run != "pretrain":
                shutil.rmtree(path)
    animals, vehicles = prepare_data(workdir, recipe)
    common = dict(recipe["common"], verbose=2, tensorboard=False)
    results = {"mode": mode, "arch": ARCH, "recipe": recipe, "machine": platform.processor()
               or platform.machine(), "cpus": os.cpu_count()}

    # 1. pretraining on the animals
    started = time.perf_counter()
    if args.pretrained:
        source = args.pretrained
        results["pretrain"] = {"source": str(source)}
    else:
        pre = {k: v for k, v in recipe["pretrain"].items()
               if k not in ("per_class", "val_per_class")}
        result = keras_resnet.fit({"arch": ARCH, "data": {"spec": str(animals)}},
                                  output=workdir / "pretrain",
                                  overrides={**pre, "verbose": 2, "tensorboard": False})
        source = result.run_dir / "model.keras"
        results["pretrain"] = {"val_accuracy": final_accuracy(result),
                               "wall_time_s": result.metrics["wall_time_s"],
                               "images_per_second": result.metrics["images_per_second"],
                               "precision": result.metrics["precision"]}
    print(f"\nPretrained on {len(ANIMALS)} animal classes in "
          f"{time.perf_counter() - started:.0f}s: {results['pretrain']}", flush=True)

    # 2. and 3. fine-tuned vs from scratch, same data, same epochs, several seeds
    ft, scratch = recipe["finetune"], recipe["scratch"]
    runs = {"finetuned": [], "scratch": []}
    for seed in recipe["seeds"]:
        result = keras_resnet.finetune(
            source, str(vehicles), output=workdir / f"finetune-{seed}",
            epochs=ft["epochs"], head_epochs=ft["head_epochs"], lr=ft["lr"],
            head_lr=ft["head_lr"], freeze=ft["freeze"], stage_lr_decay=ft["stage_lr_decay"],
            overrides={**common, "seed": seed})
        runs["finetuned"].append({"seed": seed, "val_accuracy": final_accuracy(result),
                                  "wall_time_s": result.metrics["wall_time_s"]})
        result = keras_resnet.fit(
            {"arch": ARCH, "data": {"spec": str(vehicles)}}, output=workdir / f"scratch-{seed}",
            overrides={**common, "seed": seed, "epochs": scratch["epochs"],
                       "optimizer.lr": scratch["lr"]})
        runs["scratch"].append({"seed": seed, "val_accuracy": final_accuracy(result),
                                "wall_time_s": result.metrics["wall_time_s"]})
    results["runs"] = runs
    for name, rows in runs.items():
        accuracies = [row["val_accuracy"] for row in rows]
        results[f"{name}_val_accuracy"] = sum(accuracies) / len(accuracies)

    target = recipe["target"]
    print(f"\n{ARCH}, {len(VEHICLES)} vehicle classes x {target['train_per_class']} training "
          f"images, validated on {len(VEHICLES)} x {target['val_per_class']} others "
          f"(final-epoch accuracy, seeds {recipe['seeds']}):")
    print("| model | val accuracy (mean) | per seed |")
    print("|---|---|---|")
    for name, label in (("finetuned", "fine-tuned from the animal model"),
                        ("scratch", "from scratch, same epochs")):
        per_seed = ", ".join(f"{row['val_accuracy']:.3f}" for row in runs[name])
        print(f"| {label} | {results[f'{name}_val_accuracy']:.3f} | {per_seed} |")
    gain = results["finetuned_val_accuracy"] - results["scratch_val_accuracy"]
    print(f"Fine-tuning gain: {gain * 100:+.1f} points. Recipe: {json.dumps(recipe)}")
    if mode == "quick":
        print("(--quick: the budget only checks that everything runs; the figures mean nothing)")
    results["gain_points"] = round(gain * 100, 2)
    results["clearly_ahead"] = gain * 100 >= CLEARLY_AHEAD_POINTS
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if mode == "full" and not results["clearly_ahead"]:
        print(f"FAILED: fine-tuning is less than {CLEARLY_AHEAD_POINTS} points ahead")
    return results


if __name__ == "__main__":
    outcome = main()
    sys.exit(0 if outcome["mode"] == "quick" or outcome["clearly_ahead"] else 1)
