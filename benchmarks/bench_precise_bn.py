"""Would exact BatchNorm statistics lift a finished run's validation accuracy?

A recipe with a short BatchNorm memory (``model.bn_momentum: 0.6``, as airbench's) ends with
moving statistics drawn from the last two or three batches, and Lookahead then swaps in
averaged weights. "Precise BN" (Wu and Johnson, 2021) replaces the moving statistics with
averages over many training batches under the final weights. This script scores that on saved
runs, without training: for each run directory it loads ``model.keras``, scores the validation
split of the run's own data, recomputes every BatchNorm layer's mean and variance as the
average over ``--batches`` augmented training batches (the run's pipeline and batch size;
the training-mode outputs do not depend on the moving statistics, so one pass suffices),
scores again, and restores the saved statistics.

    python benchmarks/bench_precise_bn.py runs/c10-airbench95 [runs/other ...] --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras_resnet  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)


def batchnorm_layers(model):
    import keras

    return [layer for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)]


def precise_statistics(model, dataset, batches: int) -> list:
    """Set each BatchNorm's moving mean and variance to their average over ``batches``
    training batches; returns the saved (momentum, mean, variance) to undo it."""
    layers = batchnorm_layers(model)
    saved = [(layer.momentum, layer.moving_mean.numpy(), layer.moving_variance.numpy())
             for layer in layers]
    for layer in layers:
        layer.momentum = 0.0      # each training call then stores that batch's own moments
    sums, count = None, 0
    for images, _ in dataset.take(batches):
        model(images, training=True)
        moments = [(layer.moving_mean.numpy().astype(np.float64),
                    layer.moving_variance.numpy().astype(np.float64)) for layer in layers]
        sums = moments if sums is None else [
            (m0 + m1, v0 + v1) for (m0, v0), (m1, v1) in zip(sums, moments)]
        count += 1
    for layer, (mean, variance), (momentum, _, _) in zip(layers, sums, saved):
        layer.moving_mean.assign(mean / count)
        layer.moving_variance.assign(variance / count)
        layer.momentum = momentum
    return saved


def accuracy(model, images, labels) -> float:
    scores = model.predict(images, batch_size=500, verbose=0)
    return float(np.mean(scores.argmax(-1) == labels))


def restore(model, saved) -> None:
    for layer, (momentum, mean, variance) in zip(batchnorm_layers(model), saved):
        layer.momentum = momentum
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of keras-resnet fit")
    parser.add_argument("--batches", type=int, default=20, help="training batches to average")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    for run in args.runs:
        if not (run / "config.yaml").is_file() or not (run / "model.keras").is_file():
            parser.error(f"{run}: not a finished run directory (needs config.yaml and model.keras)")

    import keras
    import yaml

    from keras_resnet.training.fit import load_training_data

    rows, loaded = {}, {}
    for run in args.runs:
        config = yaml.safe_load((run / "config.yaml").read_text())
        key = json.dumps([config["data"], config["batch_size"]], sort_keys=True)
        if key not in loaded:            # runs on the same split share one decoding
            data = load_training_data(config)
            images, labels = zip(*((x.numpy(), y.numpy()) for x, y in data.dataset("val")))
            labels = np.concatenate(labels)
            loaded[key] = (data.dataset("train", training=True), np.concatenate(images),
                           labels.argmax(-1) if labels.ndim == 2 else labels)
        train, val_images, val_labels = loaded[key]

        model = keras.models.load_model(run / "model.keras")
        row = {"saved_statistics": accuracy(model, val_images, val_labels)}
        start = time.perf_counter()
        saved = precise_statistics(model, train, args.batches)
        row["precise_statistics"] = accuracy(model, val_images, val_labels)
        row["seconds"] = round(time.perf_counter() - start, 1)
        restore(model, saved)
        rows[str(run)] = row
        print(f"{run}: {row['saved_statistics']:.4f} with the saved statistics, "
              f"{row['precise_statistics']:.4f} with {args.batches} batches' "
              f"({row['seconds']} s)", flush=True)
    differences = [r["precise_statistics"] - r["saved_statistics"] for r in rows.values()]
    print(f"mean change {100 * np.mean(differences):+.2f} points over {len(rows)} runs "
          f"({100 * min(differences):+.2f} to {100 * max(differences):+.2f})")
    if args.json:
        args.json.write_text(json.dumps({"batches": args.batches, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
