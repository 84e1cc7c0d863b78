"""Inference speed of every runtime the package exports to, on this machine.

For each architecture: batch-1 latency (p50, p95, milliseconds) and batch-64 throughput
(images/s) of Keras ``model.predict``, a direct Keras call ``model(x, training=False)``, the
SavedModel, ONNX Runtime and LiteRT, all on the same float32 artifacts (exported and
parity-checked by ``keras_resnet.export``; the max abs difference from Keras is shown), with the
ratio of each to Keras ``predict``. Models have random weights: speed does not depend on them.

    python benchmarks/bench_inference.py                 # resnet20 @32, resnet50 @224
    python benchmarks/bench_inference.py --quick         # a few repeats: checks that it runs
    python benchmarks/bench_inference.py --json out.json

Run it on a quiet machine: other processes on the cores skew every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# architecture -> image size it is benchmarked at
ARCHITECTURES = {"resnet20": 32, "resnet50": 224}
RUNTIMES = ("keras predict", "keras call", "savedmodel", "onnxruntime", "litert")
THROUGHPUT_BATCH = 64
RUNTIME_FORMATS = {"savedmodel": "savedmodel", "onnxruntime": "onnx", "litert": "tflite"}


def measure(function, images, *, warmup: int, repeats: int) -> np.ndarray:
    """Seconds per call of ``function(images)`` over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        function(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(images)
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def runtimes_for(arch: str, size: int, workdir: Path, threads: int | None):
    """``{runtime: callable(images) -> probabilities}`` for one architecture."""
    import keras_resnet.export.predictor as predictors
    from keras_resnet.export import export
    from keras_resnet.models import create_model

    model = create_model(arch, input_shape=(size, size, 3))
    parity_images = np.random.default_rng(0).uniform(0, 255, (8, size, size, 3))
    out = workdir / arch
    # Random weights give exploding logits (about +-5000 for resnet50): probabilities are
    # one-hot and a 1e-3 change of a logit can move them by more than the 1e-5 float32 gate.
    # The benchmark measures speed, so it loosens the gate and reports the differences.
    manifest = export(model, out, formats="all", quantize="none", max_abs_diff=1e-2,
                      parity_data=parity_images.astype("f4"))
    diffs = {entry["format"]: entry["parity"]["max_abs_diff"] for entry in manifest["artifacts"]}
    onnx_predictor = predictors.OnnxPredictor(out / "model.onnx")
    if threads:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        onnx_predictor.session = ort.InferenceSession(
            str(out / "model.onnx"), options, providers=onnx_predictor.session.get_providers())
    litert = predictors.LiteRTPredictor(out / "model.tflite", num_threads=threads)
    savedmodel = predictors.SavedModelPredictor(out / "saved_model")
    return diffs, {
        "keras predict": lambda x: model.predict(x, batch_size=len(x), verbose=0),
        "keras call": lambda x: np.asarray(model(x, training=False)),
        "savedmodel": lambda x: savedmodel.predict(x, batch_size=len(x)),
        "onnxruntime": lambda x: onnx_predictor.predict(x, batch_size=len(x)),
        "litert": lambda x: litert.predict(x, batch_size=len(x)),
    }, onnx_predictor.provider


def benchmark(arch: str, size: int, workdir: Path, *, quick: bool, threads: int | None) -> dict:
    diffs, functions, onnx_provider = runtimes_for(arch, size, workdir, threads)
    rng = np.random.default_rng(1)
    one = rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    batch = rng.uniform(0, 255, (THROUGHPUT_BATCH, size, size, 3)).astype(np.float32)
    latency_repeats = 10 if quick else 200
    throughput_repeats = 2 if quick else 20
    rows = {}
    for runtime, function in functions.items():
        latency = measure(function, one, warmup=3 if quick else 20, repeats=latency_repeats)
        bulk = measure(function, batch, warmup=1 if quick else 3, repeats=throughput_repeats)
        rows[runtime] = {
            "p50_ms": float(np.percentile(latency, 50) * 1e3),
            "p95_ms": float(np.percentile(latency, 95) * 1e3),
            "images_per_s": float(THROUGHPUT_BATCH / np.median(bulk)),
            "max_abs_diff": diffs.get(RUNTIME_FORMATS.get(runtime)),
        }
    base = rows["keras predict"]
    for row in rows.values():
        row["p50_vs_predict"] = row["p50_ms"] / base["p50_ms"]
        row["throughput_vs_predict"] = row["images_per_s"] / base["images_per_s"]
    return {"arch": arch, "image_size": size, "onnx_provider": onnx_provider, "runtimes": rows,
            "latency_repeats": latency_repeats, "throughput_repeats": throughput_repeats}


def print_table(result: dict):
    print(f"\n{result['arch']} @ {result['image_size']}x{result['image_size']} "
          f"(ONNX Runtime: {result['onnx_provider']})")
    header = (f"{'runtime':<14} {'p50 ms':>9} {'p95 ms':>9} {'p50/predict':>12} "
              f"{'img/s @64':>10} {'vs predict':>11} {'max diff':>9}")
    print(header)
    print("-" * len(header))
    for runtime, row in result["runtimes"].items():
        print(f"{runtime:<14} {row['p50_ms']:>9.2f} {row['p95_ms']:>9.2f} "
              f"{row['p50_vs_predict']:>11.3f}x {row['images_per_s']:>10.1f} "
              f"{row['throughput_vs_predict']:>10.2f}x "
              + (f"{row['max_abs_diff']:>9.1e}" if row["max_abs_diff"] is not None else
                 f"{'-':>9}"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    parser.add_argument("--arch", action="append",
                        help="architecture[=size] (repeatable; default resnet20=32 resnet50=224)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for ONNX Runtime and LiteRT (default: all cores)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    architectures = dict(ARCHITECTURES)
    if args.arch:
        architectures = {}
        for item in args.arch:
            name, _, size = item.partition("=")
            architectures[name] = int(size) if size else ARCHITECTURES.get(name, 224)

    import tensorflow as tf

    info = {"python": platform.python_version(), "tensorflow": tf.__version__,
            "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "quick": args.quick, "threads": args.threads}
    print(json.dumps(info))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as workdir:
        for arch, size in architectures.items():
            result = benchmark(arch, size, Path(workdir), quick=args.quick, threads=args.threads)
            print_table(result)
            results.append(result)
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
