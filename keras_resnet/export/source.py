"""What gets exported: a ``.keras`` file, a run directory, or a zoo architecture.

``resolve_source`` turns the user's MODEL argument into a float32 Keras model with a fixed image
size, plus what the manifest records about where it came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from keras_resnet.export.manifest import file_sha256

RUN_DIR_MODELS = ("best.keras", "model.keras")


@dataclass
class Source:
    """The Keras model to export and what is known about it."""

    model: object  # keras.Model, float32, fixed spatial input size
    arch: str | None
    class_names: list[str]
    image_size: tuple[int, int]
    description: dict = field(default_factory=dict)  # source entry of the manifest


def model_file_of(path) -> Path:
    """The ``.keras`` file behind MODEL: the file itself or a run directory's ``best.keras``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model file or run directory: {path}")
    if path.is_dir():
        for name in RUN_DIR_MODELS:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"no best.keras or model.keras in run directory {path}")
    if path.suffix != ".keras":
        raise ValueError(f"MODEL must be a .keras file, a run directory or --arch NAME, got {path}")
    return path


def as_float32(model):
    """The same network computing in float32.

    A model trained under a mixed-precision policy keeps that policy when reloaded; deployment
    artifacts are float32 (quantization is a separate, explicit choice), so the graph is rebuilt
    from its config with every dtype policy set to float32 and the weights copied over.
    """
    import keras

    if all(getattr(layer, "compute_dtype", "float32") == "float32" for layer in model.layers):
        return model

    def strip(node):
        if isinstance(node, dict):
            if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
                return "float32"
            return {key: strip(value) for key, value in node.items()}
        if isinstance(node, list):
            return [strip(item) for item in node]
        return node

    rebuilt = keras.Model.from_config(strip(model.get_config()))
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _fixed_size(model, requested, fallback):
    """The (H, W) of the artifacts: the model's own if fixed, else ``requested``/``fallback``."""
    height, width = model.input_shape[1:3]
    if height is not None and width is not None:
        if requested is not None and tuple(requested) != (height, width):
            raise ValueError(f"the model takes {height}x{width} images; --image-size "
                             f"{requested[0]}x{requested[1]} does not match it")
        return int(height), int(width)
    size = requested or fallback
    if size is None:
        raise ValueError("the model accepts any image size; pass --image-size for the artifacts")
    return int(size[0]), int(size[1])


def _with_input_size(model, image_size):
    """Rebuild a model with a dynamic spatial input at a fixed size (TFLite needs static shapes)."""
    import keras

    height, width = model.input_shape[1:3]
    if (height, width) == tuple(image_size):
        return model
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            key = "batch_shape" if "batch_shape" in layer["config"] else "batch_input_shape"
            shape = list(layer["config"][key])
            layer["config"][key] = [shape[0], *image_size, shape[-1]]
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def resolve_source(model=None, *, arch: str | None = None, num_classes: int | None = None,
                   image_size=None, weights: str | None = None) -> Source:
    """Load MODEL (a path or an in-memory ``keras.Model``) or build zoo entry ``arch``."""
    import keras

    from keras_resnet.models import create_model, get_spec, load_model, read_metadata

    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if (model is None) == (arch is None):
        raise ValueError("give exactly one of MODEL (a .keras file or run directory) or --arch")

    if isinstance(model, keras.Model):
        metadata = {}
        description = {"kind": "in-memory model", "name": model.name}
        keras_model = model
    elif model is not None:
        if num_classes is not None or weights is not None:
            raise ValueError("--num-classes and --weights apply to --arch only")
        model_file = model_file_of(model)
        metadata = read_metadata(model_file)
        keras_model = load_model(model_file)
        description = {"kind": "keras file", "path": str(model_file.resolve()),
                       "sha256": file_sha256(model_file)}
    else:
        spec = get_spec(arch)  # raises ValueError for an unknown name
        size = image_size or spec.get("default_input_shape", (224, 224, 3))[:2]
        if weights is not None:
            if not arch.startswith("keras_"):
                raise ValueError(f"--weights imports keras.applications weights; it needs a "
                                 f"keras_* architecture, not {arch!r}")
            from keras_resnet.models import from_keras_application, load_keras_application

            try:
                application = load_keras_application(arch[len("keras_"):], weights=weights)
            except RuntimeError as error:  # no network for the ImageNet download
                raise ValueError(str(error)) from None
            keras_model = from_keras_application(application, input_shape=(*size, 3))
            if num_classes is not None and num_classes != keras_model.output_shape[-1]:
                raise ValueError("--num-classes cannot change imported ImageNet weights")
        else:
            keras_model = create_model(arch, num_classes=num_classes, input_shape=(*size, 3))
        metadata = {"arch": arch}
        description = {"kind": "zoo architecture", "arch": arch,
                       "weights": weights or "random"}

    size = _fixed_size(keras_model, image_size, metadata.get("image_size"))
    keras_model = as_float32(_with_input_size(keras_model, size))
    num_outputs = int(keras_model.output_shape[-1])
    class_names = list(metadata.get("class_names") or [str(i) for i in range(num_outputs)])
    if len(class_names) != num_outputs:
        raise ValueError(f"the model has {num_outputs} outputs but its metadata names "
                         f"{len(class_names)} classes")
    return Source(model=keras_model, arch=metadata.get("arch") or arch, class_names=class_names,
                  image_size=size, description=description)
