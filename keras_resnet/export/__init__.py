"""Deployment artifacts (SavedModel, ONNX, TFLite), the parity gate, and one predictor
interface over every format.

``export`` and the format writers import TensorFlow, tf2onnx and friends; they load on first
use so that ``load_artifact`` for an ONNX or TFLite file stays light.
"""
import importlib
import sys
import types

from keras_resnet.export.predictor import Predictor, load_artifact

_LAZY = {
    "export": "keras_resnet.export.api",
    "ExportGateError": "keras_resnet.export.api",
    "plan_artifacts": "keras_resnet.export.api",
    "verify_export": "keras_resnet.export.manifest",
    "read_manifest": "keras_resnet.export.manifest",
}

__all__ = ["ExportGateError", "Predictor", "export", "load_artifact", "plan_artifacts",
           "read_manifest", "verify_export"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_resnet.export' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """``keras_resnet.export(...)`` is the public ``export`` function, but once this package is
    imported Python binds the name ``keras_resnet.export`` to the package itself; calling the
    package calls the function, so both spellings work."""

    def __call__(self, *args, **kwargs):
        return self.export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
