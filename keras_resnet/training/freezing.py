"""Freezing a zoo ResNet by depth, and learning rates per depth.

Both key on the zoo's stable layer names: ``stem_*``, ``stageN_blockM_*``, ``post_*`` (the
final BatchNorm of pre-activation nets) form the backbone; ``head_pool``, ``head_scale``,
``head_dropout``, ``predictions`` and ``probabilities`` the head.

Frozen layers get ``trainable = False``. For a ``BatchNormalization`` layer Keras 3 then also
runs it in inference mode (moving statistics used and left unchanged, even inside ``fit``):
exactly what fine-tuning needs, and what older Keras ResNets got wrong by updating the
statistics of "frozen" layers on the new data.
"""
from __future__ import annotations

import re

import keras

from keras_resnet.models.whitening import WHITENING_LAYER

FREEZE_CHOICES = ("none", "stem", "stage1", "stage2", "stage3", "stage4", "backbone")
HEAD_LAYERS = ("head_pool", "head_scale", "head_dropout", "predictions", "probabilities")
UNWEIGHTED_INPUT_LAYERS = ("images", "preprocess")

_PART = re.compile(r"^(stem|stage\d+|post)_")


def part_of(layer_name: str) -> str | None:
    """``"stem"``, ``"stage3"``, ``"post"`` or ``"head"`` for a zoo layer name; ``None`` for
    the input and preprocessing layers (and names that are not the zoo's)."""
    if layer_name in HEAD_LAYERS:
        return "head"
    match = _PART.match(layer_name)
    return match.group(1) if match else None


def backbone_parts(model: keras.Model) -> list[str]:
    """The backbone parts of ``model`` from input to output: ``["stem", "stage1", ...,
    "post"]`` (``post`` only for pre-activation nets). Refuses a model whose weighted layers
    are not all named the zoo's way."""
    parts, unknown = set(), []
    for layer in model.layers:
        part = part_of(layer.name)
        if part is None and layer.weights:
            unknown.append(layer.name)
        elif part not in (None, "head"):
            parts.add(part)
    if unknown or "stem" not in parts:
        raise ValueError(f"{model.name} does not use the zoo's layer names "
                         f"(stem_*, stageN_*), so it cannot be frozen by depth"
                         + (f"; e.g. {unknown[0]!r}" if unknown else ""))
    stages = sorted((p for p in parts if p.startswith("stage")), key=lambda p: int(p[5:]))
    return ["stem", *stages] + (["post"] if "post" in parts else [])


def frozen_parts(model: keras.Model, freeze: str) -> list[str]:
    """The parts that ``freeze`` freezes: everything up to and including that part."""
    freeze = str(freeze).lower()
    if freeze not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, got {freeze!r}")
    parts = backbone_parts(model)
    if freeze == "none":
        return []
    if freeze == "backbone":
        return parts
    if freeze not in parts:
        stages = [p for p in parts if p.startswith("stage")]
        raise ValueError(f"{model.name} has {len(stages)} stages ({stages[0]}..{stages[-1]}); "
                         f"cannot freeze up to {freeze}")
    return parts[:parts.index(freeze) + 1]


def freeze(model: keras.Model, freeze: str) -> list[str]:
    """Freeze ``model`` up to and including ``freeze`` (``none``, ``stem``, ``stage1`` ...
    ``stage4``, ``backbone``) and unfreeze the rest. Returns the frozen parts.

    Call it before ``compile``: Keras reads ``trainable`` when it builds the train step.
    """
    frozen = set(frozen_parts(model, freeze))
    model.trainable = True
    for layer in model.layers:
        # The patch-whitening stem is fixed by design and stays frozen.
        layer.trainable = part_of(layer.name) not in frozen and layer.name != WHITENING_LAYER
    return [p for p in backbone_parts(model) if p in frozen]


def depth_lr_multipliers(model: keras.Model, decay: float) -> dict[str, float]:
    """Learning-rate multiplier of every trainable variable (by ``variable.path``) for a
    per-stage ``decay`` in (0, 1]: the head (and ``post``) learn at the full rate, the last
    stage at ``decay``, the one before at ``decay**2``, ..., the stem at the smallest. Earlier
    layers hold more general features and should move less (layer-wise learning-rate decay).
    """
    if not 0.0 < float(decay) <= 1.0:
        raise ValueError(f"stage_lr_decay must be in (0, 1], got {decay}")
    parts = [p for p in backbone_parts(model) if p != "post"]
    # stem -> decay**len(stages)+1 ... last stage -> decay; head and post -> 1
    power = {part: len(parts) - i for i, part in enumerate(parts)}
    multipliers = {}
    for layer in model.layers:
        factor = float(decay) ** power.get(part_of(layer.name), 0)
        for variable in layer.trainable_weights:
            multipliers[variable.path] = factor
    return multipliers


def apply_lr_multipliers(optimizer: keras.optimizers.Optimizer, variables, multipliers, *,
                         scale_decay: bool = True) -> None:
    """Give each variable its own learning rate: ``multipliers[variable.path]`` times the
    optimizer's (scheduled) rate. Keras 3 has no per-variable learning rate and ``fit`` takes
    one optimizer, so this wraps the one place where an optimizer reads its rate,
    ``update_step(gradient, variable, learning_rate)``, on this instance only: the optimizer's
    config and saved state stay those of a plain Keras optimizer. Decoupled weight decay, which
    Keras applies before the update with the full rate, is rescaled by the same factor, unless
    ``scale_decay`` is ``False`` (then each step shrinks the variable as much as any other).

    Exact for every Keras optimizer (SGD, momentum, Adam, AdamW ...): each uses the
    ``learning_rate`` it is given for the whole step.
    """
    by_key, decayed = {}, set()
    for variable in variables:
        factor = float(multipliers.get(variable.path, 1.0))
        if factor != 1.0:
            key = optimizer._var_key(variable)
            by_key[key] = factor
            if scale_decay and optimizer.weight_decay and optimizer._use_weight_decay(variable):
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
