"""Model card figures computed from the real graph: parameters and FLOPs."""
from __future__ import annotations

import functools

import keras
import numpy as np
from keras import layers

from keras_resnet.models.factory import create_model
from keras_resnet.models.zoo import depth, get_spec


def count_flops(model) -> int:
    """Multiply-accumulates of the convolutions and dense layers for one image.

    This is the convention of torchvision's and timm's model cards ("GFLOPs" 4.09 for
    ResNet-50 at 224x224); BatchNorm, activations, pooling and additions are left out.
    The model needs a static input size.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            out_h, out_w = layer.output.shape[1:3]
            if out_h is None or out_w is None:
                raise ValueError("count_flops needs a model with a fixed input size")
            k_h, k_w, c_in, c_out = layer.kernel.shape
            total += out_h * out_w * k_h * k_w * c_in * c_out // layer.groups
        elif isinstance(layer, layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return int(total)


def count_trainable_params(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@functools.lru_cache(maxsize=None)
def model_info(name: str, input_size: int = 224, num_classes: int | None = None) -> dict:
    """Parameters and GFLOPs of zoo entry ``name`` at ``input_size`` x ``input_size``."""
    spec = get_spec(name)
    # Only shapes are needed: a stateless scope skips initialising the weights (~2x faster).
    with keras.StatelessScope():
        model = create_model(name, num_classes=num_classes,
                             input_shape=(input_size, input_size, 3))
    return {
        "name": name,
        "family": spec["family"],
        "block": spec["block"],
        "depth": depth(spec),
        "layers": list(spec["layers"]),
        "num_classes": int(model.output.shape[-1]),
        "input_size": input_size,
        "params": int(model.count_params()),
        "trainable_params": count_trainable_params(model),
        "gflops": round(count_flops(model) / 1e9, 4),
    }
