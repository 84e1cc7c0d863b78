"""Training on the hardest part of each batch, chosen by a small proxy network (an experiment).

airbench96_faster (Jordan, cifar10-airbench) reaches airbench96's accuracy with 0.63x its
compute this way: a small copy of the network trains alongside on every batch, and the big
one trains only on the half of the batch where the small one's loss is highest. This script
tries the same on a recipe of ours (by default ``cifar10_airbench95``) on the CIFAR-10 JPEGs:

- the main network, data pipeline, optimizer, schedule, BatchNorm-offset rate, Lookahead and
  training speed-ups are the recipe's, built with the product's own functions;
- the proxy is ``airbench94`` at ``--proxy-width`` (0.25: 16-64-64 channels, 127,360
  parameters, about 2% of airbench95's multiply-adds per image) with the recipe's settings and
  its own optimizer of the same kind;
- each step the proxy trains on the whole batch (airbench's trains on its own hardest half,
  every fourth step), the main network on the ``--keep`` fraction of it with the proxy's
  highest losses; the main loss is summed over the kept images and divided
  by the whole batch (airbench sums the loss, so its kept half moves the weights half as far).

It is not a product feature: it trains for a fixed ``--epochs`` (no time budget), writes only
``report.json`` and ``model.keras`` into ``--out``, and does not resume.

    python benchmarks/bench_proxy_filtering.py --epochs 16 --out runs/proxy16
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras_resnet  # noqa: E402,F401  (first: it chooses TensorFlow's CPU kernels)


def build_network(config, data, width=None):
    """A recipe's network (or, with ``width``, airbench94 at that width) with its whitening
    stem fitted and the recipe's training speed-ups applied."""
    from keras_resnet.training.fit import _init_data_dependent_layers, build_model
    from keras_resnet.training.speedups import apply_training_speedups

    if width is not None:
        config = dict(config, arch="airbench94",
                      model=dict(config["model"], width_multiplier=width))
    model = build_model(config, data)
    _init_data_dependent_layers(model, data, 1, config["model"]["whitening_eps"])
    apply_training_speedups(model, config)
    return model


def recipe_optimizer(config, network, epochs: int, steps: int):
    from keras_resnet.training.optimizers import build_optimizer, scale_bn_bias_rates
    from keras_resnet.training.schedules import build_schedule

    schedule = build_schedule(config["schedule"], config["optimizer"]["lr"], epochs, steps)
    optimizer = build_optimizer(config["optimizer"], schedule)
    scale_bn_bias_rates(optimizer, network, config["optimizer"]["bn_bias_lr_multiplier"])
    return optimizer


def filtered_model(main, proxy, proxy_optimizer, batch: int, keep: int, loss_fn):
    """A Keras model whose training step trains ``proxy`` on the batch and ``main`` on the
    ``keep`` images of the batch with the proxy's highest loss; ``call`` is ``main``'s."""
    import keras
    import tensorflow as tf

    class ProxyFiltered(keras.Model):
        def __init__(self):
            super().__init__()
            self.main, self.proxy, self.proxy_optimizer = main, proxy, proxy_optimizer

        def call(self, x, training=False):
            return self.main(x, training=training)

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                proxy_losses = loss_fn(y, self.proxy(x, training=True))
                proxy_loss = tf.reduce_mean(proxy_losses)
            variables = self.proxy.trainable_variables
            self.proxy_optimizer.apply(tape.gradient(proxy_loss, variables), variables)
            hardest = tf.math.top_k(tf.stop_gradient(proxy_losses), keep).indices
            x, y = tf.gather(x, hardest), tf.gather(y, hardest)
            with tf.GradientTape() as tape:
                outputs = self.main(x, training=True)
                losses = loss_fn(y, outputs)
                loss = tf.reduce_sum(losses) / batch
            variables = self.main.trainable_variables
            self.optimizer.apply(tape.gradient(loss, variables), variables)
            metrics = self.compute_metrics(x, y, outputs)
            return dict(metrics, loss=tf.reduce_mean(losses), proxy_loss=proxy_loss)

    return ProxyFiltered()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--keep", type=float, default=0.5,
                        help="fraction of each batch the main network trains on")
    parser.add_argument("--proxy-width", type=float, default=0.25,
                        help="airbench94's width multiplier for the proxy")
    parser.add_argument("--recipe", default="cifar10_airbench95")
    parser.add_argument("--data", default="../shared/datasets/cifar10/train")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per epoch (a smoke run); default: the whole training split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="directory for report.json, model.keras")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from keras_resnet.models import save_model
    from keras_resnet.training.callbacks import Lookahead
    from keras_resnet.training.config import resolve_config
    from keras_resnet.training.fit import (_train_from_epoch, _with_known_length,
                                           load_training_data, outputs_probabilities,
                                           setup_runtime, steps_per_epoch_of)

    started = time.perf_counter()
    config = resolve_config(args.recipe, {"data.spec": args.data, "seed": args.seed,
                                          "epochs": args.epochs, "time_budget_minutes": None})
    setup_runtime(config)
    data = load_training_data(config)
    steps, repeat = steps_per_epoch_of(config, data)
    steps = args.steps or steps
    main_net = build_network(config, data)
    proxy = build_network(config, data, width=args.proxy_width)
    print(f"main: {main_net.count_params():,} parameters, proxy: {proxy.count_params():,}",
          flush=True)

    logits = not outputs_probabilities(main_net)
    smoothing = config["label_smoothing"]

    def per_image_loss(y, outputs):
        return keras.losses.categorical_crossentropy(
            y, tf.cast(outputs, "float32"), from_logits=logits, label_smoothing=smoothing)

    batch = config["batch_size"]
    model = filtered_model(main_net, proxy,
                           recipe_optimizer(config, proxy, args.epochs, steps), batch,
                           int(round(batch * args.keep)), per_image_loss)
    model.compile(optimizer=recipe_optimizer(config, main_net, args.epochs, steps),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=logits,
                                                            label_smoothing=smoothing),
                  metrics=["accuracy"], steps_per_execution=1)
    model.proxy_optimizer.build(proxy.trainable_variables)

    train = _train_from_epoch(data, 0)
    if repeat or args.steps:
        train = train.repeat()
    val = _with_known_length(data.val, data.num_examples.get("val"), batch)
    curve = []

    class Curve(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            curve.append({"epoch": epoch + 1,
                          "seconds": round(time.perf_counter() - started, 1),
                          "val_accuracy": logs.get("val_accuracy"), "loss": logs.get("loss")})
            print(json.dumps(curve[-1]), flush=True)

    lookahead = Lookahead(config["optimizer"]["lookahead_every"],
                          config["optimizer"]["lookahead_decay"], steps_per_epoch=steps)
    model.fit(train, validation_data=val, epochs=args.epochs, steps_per_epoch=steps,
              callbacks=[lookahead, Curve()], verbose=2)
    train_seconds = time.perf_counter() - started
    # Scored after Lookahead's last sync (the weights training ends on).
    main_net.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=logits),
                     metrics=["accuracy"])
    final = main_net.evaluate(val, verbose=0, return_dict=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(main_net, out / "model.keras")
    report = {"args": vars(args), "steps_per_epoch": steps,
              "train_seconds": round(train_seconds, 1),
              "final_val_accuracy": final["accuracy"], "curve": curve}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print("FINAL", json.dumps({k: report[k] for k in ("train_seconds", "final_val_accuracy")}),
          flush=True)


if __name__ == "__main__":
    main()
