"""How close a recipe's training step comes to this CPU's bfloat16 matrix-multiply peak.

Time to accuracy on a small CPU is bounded by the arithmetic the CPU can do: this script puts
the recipe's achieved rate next to the best rate TensorFlow reaches on the same cores, measured
in the same run, in alternating rounds (the host's speed drifts):

- the peak: the best of ``--calls`` square ``tf.matmul`` calls of side 2,048, 4,096 and 6,144, in
  bfloat16 and in float32 (GFLOP/s, 2 FLOP per multiply-add);
- the recipe: seconds per training step as ``benchmarks/bench_step_time.py`` measures it (the
  model, precision and optimizer as ``fit`` builds them, in a fresh process), turned into
  GFLOP/s from the network's multiply-adds per image (``count_flops``, torchvision's
  convention) times 3 for the forward pass, the input gradient and the filter gradient.

The training count is an upper bound on the useful work by a hair (the stem needs no input
gradient) and leaves out BatchNorm, activations and the optimizer, which cost time but few
FLOPs, so the fraction it gives is a fair "how much faster could the same arithmetic go".

    python benchmarks/bench_peak_fraction.py --config cifar10_airbench95
    python benchmarks/bench_peak_fraction.py --config cifar10_airbench95 --quick   # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras_resnet  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)

SIDES = (2048, 4096, 6144)


def matmul_peak(calls: int) -> dict:
    """Best GFLOP/s of ``calls`` square products per side and dtype, in this process."""
    import tensorflow as tf

    best = {}
    for dtype in (tf.bfloat16, tf.float32):
        for side in SIDES:
            a = tf.cast(tf.random.normal([side, side]), dtype)
            b = tf.cast(tf.random.normal([side, side]), dtype)
            tf.matmul(a, b).numpy()                       # warm-up: oneDNN's kernel choice
            fastest = float("inf")
            for _ in range(calls):
                start = time.perf_counter()
                tf.matmul(a, b).numpy()
                fastest = min(fastest, time.perf_counter() - start)
            best[f"{dtype.name}_{side}"] = 2 * side ** 3 / fastest / 1e9
    return best


def multiply_adds(config_name: str) -> tuple[int, int]:
    """(multiply-adds per image, batch size) of the recipe's network at 32x32."""
    from types import SimpleNamespace

    from keras_resnet.models.info import count_flops
    from keras_resnet.training.config import resolve_config
    from keras_resnet.training.fit import build_model

    config = resolve_config(config_name)
    model = build_model(config, SimpleNamespace(num_classes=10, image_shape=(32, 32, 3)))
    return count_flops(model), int(config["batch_size"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="cifar10_airbench95", help="recipe name or YAML")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per round")
    parser.add_argument("--calls", type=int, default=5, help="matmul calls per size and dtype")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 steps, one round")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--peak", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from bench_training import json_from_fresh_process

    if args.peak:
        print(json.dumps(matmul_peak(args.calls)))
        return
    steps, repeats, calls = (2, 1, 2) if args.quick else (args.steps, args.repeats, args.calls)
    try:
        macs, batch = multiply_adds(args.config)
    except (FileNotFoundError, ValueError) as error:   # an unknown recipe, a bad value
        parser.error(str(error))
    train_flop_per_image = 3 * 2 * macs
    step_script = str(Path(__file__).resolve().parent / "bench_step_time.py")
    rounds = []
    for round_ in range(1, repeats + 1):
        peak = json_from_fresh_process([__file__, "--peak", "--calls", str(calls)], "the matmul")
        seconds = json_from_fresh_process([step_script, "--config", args.config, "--steps",
                                           str(steps), "--measure"], "the training step")
        achieved = train_flop_per_image * batch / seconds / 1e9
        bf16_peak = max(v for k, v in peak.items() if k.startswith("bfloat16"))
        rounds.append({"peak_gflops": peak, "seconds_per_step": seconds,
                       "achieved_gflops": achieved, "fraction_of_bf16_peak": achieved / bf16_peak})
        print(f"round {round_}: matmul peak " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())
              + f" GFLOP/s; {args.config}: {seconds:.3f} s/step = {achieved:.0f} GFLOP/s, "
              f"{achieved / bf16_peak:.2f} of the bfloat16 peak", flush=True)
    fraction = statistics.median(r["fraction_of_bf16_peak"] for r in rounds)
    print(f"\n{args.config}: {macs / 1e6:.1f} million multiply-adds per image, batch {batch}; "
          f"median over {repeats} rounds: {fraction:.2f} of the bfloat16 matmul peak")
    if args.json:
        args.json.write_text(json.dumps({"config": args.config, "multiply_adds": macs,
                                         "batch_size": batch, "steps": steps,
                                         "rounds": rounds, "median_fraction": fraction},
                                        indent=1))


if __name__ == "__main__":
    main()
