"""Training: ``fit`` (recipes, mixed precision, checkpoints, resume, tf.distribute), and
``finetune`` and ``tune``, which build on it.

Modules load lazily so ``import keras_resnet.training`` does not start TensorFlow.
"""
import importlib

# public name -> module that defines it
_API = {
    "fit": "keras_resnet.training.fit",
    "FitResult": "keras_resnet.training.fit",
    "resolve_config": "keras_resnet.training.config",
    "ConfigError": "keras_resnet.training.config",
    "list_recipes": "keras_resnet.training.config",
    "plot_curves": "keras_resnet.training.curves",
    "finetune": "keras_resnet.training.finetune",
    "tune": "keras_resnet.training.tune",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'keras_resnet.training' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
