"""Where fine-tuning starts from: resolving a SOURCE into a zoo model with pretrained weights.

A SOURCE is one of

- a ``.keras`` file or a training run directory of ours (``best.keras``, else ``model.keras``);
  its metadata gives the architecture, the class names and the image size;
- ``keras:NAME`` (``keras:resnet50``, ``keras:resnet101v2``, ...): a ``keras.applications``
  ResNet with ImageNet weights downloaded by Keras, ``keras:NAME=path/to/weights.h5`` with
  weights from a local file (the "notop" file or the full one), or ``keras:NAME=random`` for a
  randomly initialised network (checks a pipeline offline). It is mapped onto the zoo entry of
  the same layout (``keras_resnet50``, ...) by the foundation's weight import, so the result has
  our layer names and takes raw 0-255 pixels;
- in Python, also a ``keras.Model``: one of ours, or a ``keras.applications`` ResNet.

``resolve_source`` only reads what is cheap (metadata); ``Pretrained.build`` then makes the
network at the image size the new data needs, and ``prepare_model`` gives it a new head for the
new classes under the run's precision.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import keras

from keras_resnet.models import (
    from_keras_application, load_keras_application, load_model, read_metadata,
)
from keras_resnet.models.keras_apps import LAYOUTS
from keras_resnet.training.freezing import HEAD_LAYERS

KERAS_PREFIX = "keras:"
RANDOM_WEIGHTS = ("random", "none")


@dataclass
class Pretrained:
    """A resolved SOURCE. ``class_names``, ``arch``, ``image_size`` ((H, W) it was trained at)
    and ``recipe`` come from its metadata; the network itself loads on first ``build``, so
    resolving a SOURCE does no TensorFlow work (a multi-worker strategy must come first)."""

    description: str
    arch: str
    class_names: list | None = None
    image_size: tuple | None = None
    recipe: dict | None = None
    model: keras.Model | None = field(default=None, repr=False)
    path: Path | None = None        # the .keras file, for our models
    application: str | None = None  # keras.applications name, for keras: sources
    weights: str | None = None      # "imagenet", a file path or None (random)

    def build(self, image_size=None) -> keras.Model:
        """The pretrained network in our layout, taking ``(H, W, 3)`` images of ``image_size``
        (default: the source's own input size). A model of ours keeps its head; the caller
        replaces it (``keras_resnet.training.finetune.replace_head``)."""
        if self.application is not None:
            shape = (*image_size, 3) if image_size else (None, None, 3)
            return _import_application(self.application, self.weights, shape)
        model = self.model if self.model is not None else load_model(self.path)
        if model.name.lower() in LAYOUTS:  # a keras.applications ResNet passed in Python
            model = from_keras_application(model)
        fixed = tuple(model.input_shape[1:3])
        if image_size and None not in fixed and fixed != tuple(image_size):
            model = rebuild(model, input_shape=(*image_size, 3))
        return model


def resolve_source(source) -> Pretrained:
    """A ``Pretrained`` for SOURCE (see the module docstring); one-line errors for bad input."""
    if isinstance(source, Pretrained):
        return source
    if isinstance(source, keras.Model):
        return _from_model(source)
    text = str(source).strip()
    if text.lower().startswith(KERAS_PREFIX):
        return _from_application_spec(text)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(
            f"no such model file or run directory: {text} (or use keras:NAME, e.g. "
            f"keras:resnet50, for a Keras applications network)")
    if path.is_dir():
        candidates = [path / name for name in ("best.keras", "model.keras")]
        model_file = next((c for c in candidates if c.is_file()), None)
        if model_file is None:
            raise FileNotFoundError(f"no best.keras or model.keras in run directory {path}")
    else:
        model_file = path
        if path.suffix != ".keras":
            raise ValueError(f"a fine-tuning source must be a .keras file, a run directory or "
                             f"keras:NAME, got {text}")
    metadata = read_metadata(model_file)
    size = metadata.get("image_size")
    return Pretrained(
        description=str(model_file), arch=metadata.get("arch") or model_file.stem,
        class_names=metadata.get("class_names"), image_size=tuple(size) if size else None,
        recipe=metadata.get("recipe"), path=model_file,
    )


def _from_model(model: keras.Model) -> Pretrained:
    fixed = tuple(model.input_shape[1:3])
    arch = LAYOUTS[model.name.lower()][1] if model.name.lower() in LAYOUTS else model.name
    return Pretrained(description=f"model {model.name!r}", arch=arch, model=model,
                      image_size=fixed if None not in fixed else None)


def parse_application_spec(text: str) -> tuple[str, str | None]:
    """``keras:NAME[=WEIGHTS]`` -> (application name, weights): ``"imagenet"`` by default, a
    local file path, or ``None`` for ``=random``."""
    body = text[len(KERAS_PREFIX):]
    name, _, weights = body.partition("=")
    name = name.strip().lower().replace("_", "").replace("-", "")
    if name not in LAYOUTS:
        raise ValueError(f"unknown keras application {name!r} in {text!r}; choose one of: "
                         f"{', '.join(LAYOUTS)}")
    weights = weights.strip() or "imagenet"
    if weights.lower() in RANDOM_WEIGHTS:
        return name, None
    if weights != "imagenet" and not Path(weights).is_file():
        raise FileNotFoundError(f"no such weights file: {weights} (in {text!r})")
    return name, weights


def _from_application_spec(text: str) -> Pretrained:
    name, weights = parse_application_spec(text)
    zoo_name = LAYOUTS[name][1]
    return Pretrained(
        description=text, arch=zoo_name, application=name, weights=weights,
        recipe={"pretrained": "imagenet" if weights == "imagenet" else
                ("random" if weights is None else Path(weights).name)},
    )


def _import_application(name: str, weights: str | None, input_shape) -> keras.Model:
    """A keras.applications network with ``weights``, imported into our layout.

    The headless network (pooled features) takes any input size and is what Keras downloads
    for ``"imagenet"``. A local file may instead hold the full network's weights (1000-class
    head included, which is dropped later like any other head): the file's layer names say
    which, and the other layout is still tried if loading fails.
    """
    local = weights not in (None, "imagenet")
    first_top = local and _holds_classifier(weights)
    try:
        return _build_application(name, weights, input_shape, include_top=first_top)
    except RuntimeError as error:  # the download failed: one line for the command line
        raise ValueError(str(error)) from None
    except ValueError as first_error:
        if not local:
            raise
        try:
            return _build_application(name, weights, input_shape, include_top=not first_top)
        except ValueError:
            raise ValueError(f"{weights} does not hold {LAYOUTS[name][0]} weights "
                             f"({str(first_error).splitlines()[0]})") from None


def _build_application(name, weights, input_shape, *, include_top: bool) -> keras.Model:
    if include_top:
        # The full network has a fixed input size; ours takes the convolution weights at any.
        shape = (224, 224, 3) if None in input_shape[:2] else input_shape
        application = load_keras_application(name, weights=weights, include_top=True,
                                              input_shape=shape)
    else:
        application = load_keras_application(name, weights=weights, include_top=False,
                                              pooling="avg", input_shape=input_shape)
    return from_keras_application(application, input_shape=input_shape)


def _holds_classifier(path) -> bool:
    """Whether a weights file in the HDF5 layout of Keras's ImageNet files names a
    ``predictions`` layer (``False`` when it cannot tell)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            names = handle.attrs.get("layer_names")
            return names is not None and any(
                (n.decode() if isinstance(n, bytes) else str(n)) == "predictions" for n in names)
    except OSError:
        return False


def _layer_or_none(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def rebuild(model: keras.Model, *, input_shape=None, dtype_policy=None) -> keras.Model:
    """A copy of a functional ``model`` with a new input shape and/or dtype policy, and the
    same weights.

    Convolution and BatchNorm weights do not depend on the image size, so a network trained at
    32x32 can be fine-tuned at 64x64. ``dtype_policy`` (e.g. ``"mixed_bfloat16"``) moves every
    layer but the float32 classifier to that policy, as ``create_model`` does under a global
    policy.
    """
    def clone(layer):
        config = layer.get_config()
        if dtype_policy is not None and layer.name not in ("predictions", "probabilities"):
            config["dtype"] = dtype_policy
        return layer.__class__.from_config(config)

    shape = tuple(input_shape) if input_shape else model.input_shape[1:]
    images = keras.Input(shape, name="images")
    # In the structure of the model's own input: files saved before ``inference_copy`` kept a
    # single input reload with a list of one, and clone_model insists on the same structure.
    inputs = keras.tree.map_structure(lambda _: images, model.input)
    copy = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def replace_head(model: keras.Model, num_classes: int, *, dropout: float | None = None,
                 classifier_activation: str | None = "softmax") -> keras.Model:
    """``model`` with a new, freshly initialised classifier for ``num_classes`` classes.

    The backbone layers are shared with ``model`` (same weights, no copy). The head is built
    as ``create_model`` builds it (``head_pool`` -> ``head_scale`` if the source has one ->
    ``head_dropout`` -> float32 ``predictions`` -> ``probabilities``), so the result saves and
    reloads like any zoo model.
    ``dropout=None`` keeps the source's head dropout rate.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    names = [layer.name for layer in model.layers]
    if "head_pool" in names:
        # A scaled head (model.head_scale) keeps its scale: it sets how fast the classifier
        # learns.
        last = "head_scale" if "head_scale" in names else "head_pool"
        features = model.get_layer(last).output
    else:
        features = model.output
        if len(features.shape) != 4:
            raise ValueError(f"{model.name} has no head_pool layer and does not end in a "
                             f"feature map: cannot attach a new head")
        features = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    if dropout is None:
        dropout = model.get_layer("head_dropout").rate if "head_dropout" in names else 0.0
    x = features
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, dtype="float32", name="predictions")(x)
    if classifier_activation is not None:
        x = keras.layers.Activation(classifier_activation, dtype="float32",
                                    name="probabilities")(x)
    return keras.Model(model.input, x, name=model.name)


def with_global_policy(model: keras.Model) -> keras.Model:
    """``model`` under the global dtype policy (what ``fit`` set for the run's precision): a
    loaded model keeps the float32 policy it was saved with, so it is rebuilt when they
    differ."""
    policy = keras.config.dtype_policy().name
    if any(layer.dtype_policy.name != policy for layer in model.layers
           if layer.name not in HEAD_LAYERS and layer.weights):
        model = rebuild(model, dtype_policy=policy)
    return model


def prepare_model(source, num_classes: int, *, image_size=None, dropout: float | None = None,
                  classifier_activation: str | None = "softmax") -> tuple[keras.Model, Pretrained]:
    """The model to fine-tune: SOURCE's pretrained backbone at ``image_size`` under the global
    dtype policy (set it first for mixed precision), with a new ``num_classes`` head.

    Returns the model and the resolved source (its class names, architecture, recipe).
    """
    pretrained = resolve_source(source)
    model = with_global_policy(pretrained.build(image_size))
    return replace_head(model, num_classes, dropout=dropout,
                        classifier_activation=classifier_activation), pretrained
