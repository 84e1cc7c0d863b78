"""Fine-tuning: adapt a pretrained ResNet to a new dataset.

The model side lives here (new head, precision, per-depth learning rates); resolving SOURCE is
``keras_resnet.training.sources``, freezing by depth ``keras_resnet.training.freezing``.
"""
from __future__ import annotations

import keras

from keras_resnet.training.freezing import HEAD_LAYERS, part_of
from keras_resnet.training.sources import Pretrained, rebuild, resolve_source


def replace_head(model: keras.Model, num_classes: int, *, dropout: float | None = None,
                 classifier_activation: str | None = "softmax") -> keras.Model:
    """``model`` with a new, freshly initialised classifier for ``num_classes`` classes.

    The backbone layers are shared with ``model`` (same weights, no copy). The head is built
    as ``create_model`` builds it (``head_pool`` -> ``head_dropout`` -> float32
    ``predictions`` -> ``probabilities``), so the result saves and reloads like any zoo model.
    ``dropout=None`` keeps the source's head dropout rate.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    names = [layer.name for layer in model.layers]
    if "head_pool" in names:
        features = model.get_layer("head_pool").output
    else:
        features = model.output
        if len(features.shape) != 4:
            raise ValueError(f"{model.name} has no head_pool layer and does not end in a "
                             f"feature map: cannot attach a new head")
        features = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    if dropout is None:
        dropout = model.get_layer("head_dropout").rate if "head_dropout" in names else 0.0
    x = features
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, dtype="float32", name="predictions")(x)
    if classifier_activation is not None:
        x = keras.layers.Activation(classifier_activation, dtype="float32",
                                    name="probabilities")(x)
    return keras.Model(model.input, x, name=model.name)


def _needs_policy(model: keras.Model, policy: str) -> bool:
    return any(layer.dtype_policy.name != policy for layer in model.layers
               if layer.name not in HEAD_LAYERS and layer.weights)


def prepare_model(source, num_classes: int, *, image_size=None, dropout: float | None = None,
                  classifier_activation: str | None = "softmax") -> tuple[keras.Model, Pretrained]:
    """The model to fine-tune: SOURCE's pretrained backbone at ``image_size`` under the global
    dtype policy (set it first for mixed precision), with a new ``num_classes`` head.

    Returns the model and the resolved source (its class names, architecture, recipe).
    """
    pretrained = source if isinstance(source, Pretrained) else resolve_source(source)
    model = pretrained.build(image_size)
    policy = keras.config.dtype_policy().name
    if _needs_policy(model, policy):
        model = rebuild(model, dtype_policy=policy)
    return replace_head(model, num_classes, dropout=dropout,
                        classifier_activation=classifier_activation), pretrained


def apply_lr_multipliers(optimizer: keras.optimizers.Optimizer, variables, multipliers) -> None:
    """Give each variable its own learning rate: ``multipliers[variable.path]`` times the
    optimizer's (scheduled) rate. Keras 3 has no per-variable learning rate and ``fit`` takes
    one optimizer, so this wraps the one place where an optimizer reads its rate,
    ``update_step(gradient, variable, learning_rate)``, on this instance only: the optimizer's
    config and saved state stay those of a plain Keras optimizer. Decoupled weight decay, which
    Keras applies before the update with the full rate, is rescaled by the same factor.

    Exact for every Keras optimizer (SGD, momentum, Adam, AdamW ...): each uses the
    ``learning_rate`` it is given for the whole step.
    """
    by_key, decayed = {}, set()
    for variable in variables:
        factor = float(multipliers.get(variable.path, 1.0))
        if factor != 1.0:
            key = optimizer._var_key(variable)
            by_key[key] = factor
            if optimizer.weight_decay and optimizer._use_weight_decay(variable):
                decayed.add(key)
    if not by_key:
        return
    update_step = optimizer.update_step

    def scaled_update_step(gradient, variable, learning_rate):
        key = optimizer._var_key(variable)
        factor = by_key.get(key)
        if factor is None:
            return update_step(gradient, variable, learning_rate)
        if key in decayed:
            # Keras already shrank the variable by (1 - wd * lr); make it (1 - wd * lr * f).
            lr = keras.ops.cast(learning_rate, variable.dtype)
            wd = keras.ops.cast(optimizer.weight_decay, variable.dtype)
            variable.assign(variable * (1.0 - wd * lr * factor) / (1.0 - wd * lr))
        return update_step(gradient, variable, learning_rate * factor)

    optimizer.update_step = scaled_update_step


def backbone_variables(model: keras.Model) -> list:
    """Every weight of the backbone (trainable or not, BatchNorm statistics included)."""
    return [w for layer in model.layers if part_of(layer.name) not in (None, "head")
            for w in layer.weights]
