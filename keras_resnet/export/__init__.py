"""Deployment artifacts (SavedModel, ONNX, TFLite), the parity gate, and one predictor
interface over every format."""
from keras_resnet.export.predictor import Predictor, load_artifact

__all__ = ["Predictor", "load_artifact"]
