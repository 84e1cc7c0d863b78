"""ONNX export through tf2onnx: opset 17 by default, named input and output, dynamic batch.

``tf2onnx.convert.from_function`` on the serving function, not ``from_keras`` (unreliable on
Keras 3) nor ``model.export(format="onnx")`` (opset 15 and an output named ``Identity:0``).
The class names ride along in the model's ``metadata_props``.
"""
from __future__ import annotations

import json
from pathlib import Path

from keras_resnet.export.savedmodel import INPUT_NAME, OUTPUT_NAME, input_signature, \
    serving_function

DEFAULT_OPSET = 17
BATCH_DIM_NAME = "batch"


def write_onnx(model, path, image_size, *, opset: int = DEFAULT_OPSET,
               batch_size: int | None = None, class_names=None) -> Path:
    """Write ``model`` as an ONNX file at ``path``."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    signature = input_signature(image_size, batch_size)
    function = tf.function(serving_function(model), input_signature=signature)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
    # tf2onnx names an unknown dimension "unk__123"; give the batch axis a readable name.
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = BATCH_DIM_NAME
    names = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise RuntimeError(f"tf2onnx produced inputs/outputs {names}, expected "
                           f"[{INPUT_NAME}] -> [{OUTPUT_NAME}]")
    if class_names:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "class_names", json.dumps(list(class_names))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return Path(path)
