"""The model zoo. Imports nothing of the rest of the package."""
from keras_resnet.models.factory import create_model
from keras_resnet.models.info import count_flops, count_trainable_params, model_info
from keras_resnet.models.keras_apps import from_keras_application, load_keras_application
from keras_resnet.models.saving import load_model, read_metadata, save_model
from keras_resnet.models.zoo import ZOO, get_spec, list_models

__all__ = [
    "ZOO", "count_flops", "count_trainable_params", "create_model", "from_keras_application",
    "get_spec", "list_models", "load_keras_application", "load_model", "model_info",
    "read_metadata", "save_model",
]
