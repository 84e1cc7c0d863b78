"""Evaluation and prediction: figures, reports, confusion-matrix plots, TTA and ensembles."""
from keras_resnet.evaluation.api import evaluate, predict, predict_data

__all__ = ["evaluate", "predict", "predict_data"]
