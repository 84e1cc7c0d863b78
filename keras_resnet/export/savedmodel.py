"""SavedModel export: one ``serve`` signature, ``images`` in, ``probabilities`` out.

Written with ``keras.export.ExportArchive`` rather than ``model.export`` because the archive
lets us name the output (``model.export`` calls it ``output_0``) and fix the batch size when
asked; the signature is also registered as ``serving_default`` for TF Serving.
"""
from __future__ import annotations

from pathlib import Path

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
SIGNATURE = "serve"


def input_signature(image_size, batch_size: int | None = None):
    """The ``TensorSpec`` every artifact takes: float32 NHWC 0-255 pixels, named ``images``."""
    import tensorflow as tf

    return [tf.TensorSpec((batch_size, *image_size, 3), tf.float32, name=INPUT_NAME)]


def serving_function(model):
    """``images -> {"probabilities": ...}``, the function every format is built from."""
    def serve(images):
        return {OUTPUT_NAME: model(images, training=False)}

    return serve


def write_savedmodel(model, path, image_size, batch_size: int | None = None) -> Path:
    """Write ``model`` as a SavedModel directory at ``path``."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serving_function(model),
                         input_signature=input_signature(image_size, batch_size))
    archive.write_out(str(path), verbose=False)
    return Path(path)
