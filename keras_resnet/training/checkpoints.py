"""Saving the models of a run: float32, without the optimizer, with metadata.

The ``.keras`` files of a run directory are for inference, export and fine-tuning, so they are
saved from a float32 copy of the model (a model trained under ``mixed_bfloat16`` would
otherwise save bfloat16 layers) and without the optimizer (its schedule may be a class of this
package, which plain ``keras.models.load_model`` could not rebuild). The optimizer state
needed to resume lives in ``checkpoints/backup/`` instead.
"""
from __future__ import annotations

import os

import keras

from keras_resnet import __version__
from keras_resnet.models import save_model
from keras_resnet.training.config import default_file_mode


def _float32_layer(layer):
    config = layer.get_config()
    if "dtype" in config:
        config["dtype"] = "float32"
    return layer.__class__.from_config(config)


def inference_copy(model: keras.Model) -> keras.Model:
    """A float32, uncompiled copy of ``model`` with the same weights and layer names."""
    policies = {getattr(layer.dtype_policy, "name", "float32") for layer in model.layers}
    if policies <= {"float32"}:
        copy = keras.models.clone_model(model)
    else:
        copy = keras.models.clone_model(model, clone_function=_float32_layer, recursive=True)
    # clone_model compiles its clone when the source is compiled, and a compiled model saves
    # its optimizer, schedule included; a new Functional over the same layers is uncompiled.
    # ``input``/``output`` (not the lists ``inputs``/``outputs``) keep the model's own structure:
    # a one-input model saved from lists reloads wanting a list of one and warns on a tensor.
    copy = keras.Model(copy.input, copy.output, name=model.name)
    copy.set_weights(model.get_weights())
    return copy


def run_metadata(*, class_names, arch, image_shape, recipe=None, extra=None) -> dict:
    metadata = {
        "class_names": list(class_names),
        "arch": arch,
        "image_size": [int(image_shape[0]), int(image_shape[1])],
        "keras_resnet_version": __version__,
    }
    if recipe is not None:
        metadata["recipe"] = recipe
    if extra:
        metadata.update(extra)
    return metadata


class InferenceSaver:
    """Saves the float32 inference copy of a training model, cloning it only once: later
    saves copy the current weights into the same clone."""

    def __init__(self, model: keras.Model):
        self.model = model
        self._copy = None

    def save(self, path, metadata: dict):
        if self._copy is None:
            self._copy = inference_copy(self.model)
        else:
            self._copy.set_weights(self.model.get_weights())
        path = save_model(self._copy, path, metadata)
        os.chmod(path, default_file_mode())
        return path


def save_run_model(model: keras.Model, path, metadata: dict):
    """Save the float32 inference copy of ``model`` atomically to ``path``."""
    return InferenceSaver(model).save(path, metadata)
