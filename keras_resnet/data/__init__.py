"""The data layer: every image that training, evaluation, export and prediction see comes from
here, selected by one data spec (see ``load_data``). It knows no model."""
from keras_resnet.data import tfds_source  # noqa: F401  (tests patch its network probe)
from keras_resnet.data.augment import parse_augment
from keras_resnet.data.check import check_data
from keras_resnet.data.pipeline import ImageData, load_data, stratified_split
from keras_resnet.data.shapes import generate_shapes
from keras_resnet.data.sources import IMAGE_EXTENSIONS, list_image_files, read_image

__all__ = [
    "IMAGE_EXTENSIONS", "ImageData", "check_data", "generate_shapes", "list_image_files",
    "load_data", "parse_augment", "read_image", "stratified_split",
]
