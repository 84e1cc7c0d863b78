"""keras-resnet: the ResNet model zoo, training, fine-tuning and export for Keras 3.

The public API is imported lazily, so ``import keras_resnet`` and ``keras-resnet --help`` stay
fast; TensorFlow loads on first use of a function that needs it.
"""
import importlib

from keras_resnet import runtime as _runtime

_runtime.prefer_onednn()  # before anything imports TensorFlow; see runtime.py

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "create_model": "keras_resnet.models",
    "list_models": "keras_resnet.models",
    "model_info": "keras_resnet.models",
    "get_spec": "keras_resnet.models",
    "from_keras_application": "keras_resnet.models",
    "load_keras_application": "keras_resnet.models",
    "save_model": "keras_resnet.models",
    "load_model": "keras_resnet.models",
    "read_metadata": "keras_resnet.models",
    "load_data": "keras_resnet.data",
    "check_data": "keras_resnet.data",
    "fit": "keras_resnet.training.fit",
    "finetune": "keras_resnet.training.finetune",
    "tune": "keras_resnet.training.tune",
    "evaluate": "keras_resnet.evaluation",
    "predict": "keras_resnet.evaluation",
    "export": "keras_resnet.export",
    "load_artifact": "keras_resnet.export",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'keras_resnet' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
