"""Optimizers from a config's ``optimizer`` section: SGD (momentum, Nesterov), AdamW, and
Muon for the convolution filters with SGD for the rest (``keras_resnet.training.muon``).

Weight decay is Keras's decoupled decay (each step ``w -= lr * weight_decay * w``, applied
apart from the gradient), for SGD as for AdamW. BatchNorm and bias weights are excluded unless
``decay_norm_and_bias`` is set, through ``Optimizer.exclude_from_weight_decay``.

Note for recipes taken from papers that use L2 regularisation with SGD momentum (He et al.,
torchvision): an L2 coefficient ``c`` under momentum ``m`` shrinks weights about as much as a
decoupled ``weight_decay`` of ``c / (1 - m)``; the recipes in ``configs/`` say which they used.
"""
from __future__ import annotations

import keras

# Variable names (Keras 3 ``Variable.name``) that are never decayed by default: BatchNorm's
# scale and offset, and every bias.
NO_DECAY_NAMES = ("gamma", "beta", "bias")


def build_optimizer(optimizer: dict, learning_rate) -> keras.optimizers.Optimizer:
    """An optimizer for the ``optimizer`` config section with ``learning_rate`` (a float or
    a ``LearningRateSchedule``)."""
    common = dict(
        learning_rate=learning_rate,
        weight_decay=optimizer["weight_decay"] or None,
        global_clipnorm=optimizer.get("clip_norm"),
        use_ema=bool(optimizer.get("ema")),
        ema_momentum=optimizer.get("ema_momentum", 0.999),
    )
    name = optimizer["name"]
    if name == "sgd":
        opt = keras.optimizers.SGD(momentum=optimizer["momentum"],
                                   nesterov=bool(optimizer["nesterov"]), **common)
    elif name == "muon":
        from keras_resnet.training.muon import ConvMuon

        opt = ConvMuon(momentum=optimizer["momentum"], nesterov=bool(optimizer["nesterov"]),
                       muon_lr_ratio=optimizer["muon_lr"] / optimizer["lr"],
                       muon_momentum=optimizer["muon_momentum"],
                       ns_steps=optimizer["muon_ns_steps"], **common)
    elif name == "adamw":
        common["weight_decay"] = optimizer["weight_decay"]
        opt = keras.optimizers.AdamW(beta_1=optimizer["beta_1"], beta_2=optimizer["beta_2"],
                                     epsilon=optimizer["epsilon"], **common)
    else:
        raise ValueError(f"optimizer.name: unknown optimizer {name!r}")
    if optimizer["weight_decay"] and not optimizer.get("decay_norm_and_bias"):
        opt.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return opt


def scale_bn_bias_rates(optimizer: keras.optimizers.Optimizer, model: keras.Model,
                        multiplier: float) -> None:
    """Train every BatchNorm offset (``beta``) of ``model`` at ``multiplier`` times the rate.

    airbench trains BatchNorm without scales and its offsets at 64x the rate of the other
    weights; its ablations found that this reaches a given accuracy in fewer epochs. As in
    airbench, the factor scales the rate but not the weight decay: where the offsets are
    decayed (``decay_norm_and_bias``), each step shrinks them as much as the other weights.
    """
    if multiplier == 1.0:
        return
    from keras_resnet.training.freezing import apply_lr_multipliers
    from keras_resnet.training.layer_calls import all_layers

    offsets = [layer.beta for layer in all_layers(model)
               if isinstance(layer, keras.layers.BatchNormalization) and layer.center
               and layer.trainable]
    apply_lr_multipliers(optimizer, offsets, {v.path: multiplier for v in offsets},
                         scale_decay=False)

