"""Weight import from ``keras.applications`` ResNets (v1 and v2).

``from_keras_application`` maps every weighted layer of a Keras application onto the zoo entry
with the same layout (``keras_resnet50`` ... ``keras_resnet152v2``). Keras's models expect their
own ``preprocess_input``; ours bake that preprocessing in, so our model on raw pixels equals
theirs on preprocessed pixels. The v1 ("caffe") preprocessing also swaps RGB to BGR: instead of
a channel-swapping layer we reverse the input channels of the stem kernel, which is exact.
"""
from __future__ import annotations

import re

import keras

from keras_resnet.models.factory import create_model

# keras.applications model name -> (constructor, our zoo entry, preprocessing mode)
LAYOUTS = {
    "resnet50": ("ResNet50", "keras_resnet50", "caffe"),
    "resnet101": ("ResNet101", "keras_resnet101", "caffe"),
    "resnet152": ("ResNet152", "keras_resnet152", "caffe"),
    "resnet50v2": ("ResNet50V2", "keras_resnet50v2", "tf"),
    "resnet101v2": ("ResNet101V2", "keras_resnet101v2", "tf"),
    "resnet152v2": ("ResNet152V2", "keras_resnet152v2", "tf"),
}

_BLOCK_LAYER = re.compile(r"^conv(\d)_block(\d+)_(0|1|2|3|preact)_(conv|bn)$")
_SIMPLE = {"conv1_conv": "stem_conv", "conv1_bn": "stem_bn", "post_bn": "post_bn",
           "predictions": "predictions"}


def our_layer_name(keras_name: str) -> str | None:
    """Our name for a weighted layer of a Keras application (``conv3_block2_1_conv`` ->
    ``stage2_block2_conv1``), or ``None`` for layers without weights."""
    if keras_name in _SIMPLE:
        return _SIMPLE[keras_name]
    match = _BLOCK_LAYER.match(keras_name)
    if not match:
        return None
    stage, block, part, kind = match.groups()
    prefix = f"stage{int(stage) - 1}_block{block}"
    if part == "preact":
        return f"{prefix}_preact_bn"
    if part == "0":
        return f"{prefix}_shortcut_{kind}"
    return f"{prefix}_{kind}{part}"


def _layout_of(model: keras.Model):
    name = model.name.lower()
    if name not in LAYOUTS:
        raise ValueError(
            f"not a keras.applications ResNet: {model.name!r}; supported: {', '.join(LAYOUTS)}"
        )
    return LAYOUTS[name]


def from_keras_application(model: keras.Model, *, input_shape=None) -> keras.Model:
    """Our model with the weights of a ``keras.applications`` ResNet (v1 or v2).

    The result takes raw 0-255 RGB pixels; ``ours(x)`` equals
    ``model(keras.applications.resnet.preprocess_input(x))`` (``resnet_v2`` for V2 models).
    """
    _, zoo_name, mode = _layout_of(model)
    include_top = "predictions" in [layer.name for layer in model.layers]
    options = {"include_top": include_top}
    if include_top:
        head = model.get_layer("predictions")
        options["num_classes"] = int(head.units)
        activation = keras.activations.serialize(head.activation)
        activation = activation if isinstance(activation, str) else activation.get("config")
        options["classifier_activation"] = None if activation == "linear" else activation
    else:
        pool = [l for l in model.layers if isinstance(l, keras.layers.GlobalMaxPooling2D)]
        options["pooling"] = "max" if pool else (
            "avg" if any(isinstance(l, keras.layers.GlobalAveragePooling2D) for l in model.layers)
            else None)
    ours = create_model(zoo_name, input_shape=input_shape or model.input_shape[1:], **options)
    copied = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        target = our_layer_name(layer.name)
        if target is None:
            raise ValueError(f"no counterpart for weighted layer {layer.name!r}")
        weights = layer.get_weights()
        if target == "stem_conv" and mode == "caffe":
            weights[0] = weights[0][:, :, ::-1, :]  # BGR -> RGB input channels
        ours.get_layer(target).set_weights(weights)
        copied.add(target)
    missing = [l.name for l in ours.layers if l.weights and l.name not in copied]
    if missing:
        raise ValueError(f"layers left without imported weights: {missing[:5]}")
    return ours


def load_keras_application(name: str, weights: str | None = "imagenet", **kwargs) -> keras.Model:
    """Build ``keras.applications`` network ``name`` (``"resnet50"``, ``"resnet101v2"``, ...)
    with ``weights`` (``"imagenet"``, a local ``.h5`` path, or ``None`` for random)."""
    key = name.lower().replace("_", "")
    if key not in LAYOUTS:
        raise ValueError(f"unknown keras application {name!r}; choose one of: {', '.join(LAYOUTS)}")
    constructor = getattr(keras.applications, LAYOUTS[key][0])
    try:
        return constructor(weights=weights, **kwargs)
    except Exception as error:  # Keras raises several kinds on a failed download
        if weights == "imagenet":
            raise RuntimeError(
                f"could not download the ImageNet weights of {LAYOUTS[key][0]} "
                f"(no network?): {error.__class__.__name__}. Pass a local file instead, e.g. "
                f"keras:{key}=path/to/weights.h5"
            ) from None
        raise
