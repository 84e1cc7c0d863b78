"""One prediction interface over every model format.

``load_artifact(path)`` returns a ``Predictor``: ``predict(images)`` takes raw 0-255 pixels,
NHWC, and returns class probabilities as a NumPy array. ``evaluate`` and ``predict`` go through
this, so they accept any format the package can write: a ``.keras`` file or run directory, a
SavedModel directory, an ``.onnx`` file (ONNX Runtime) or a ``.tflite`` file (LiteRT).

An artifact inside an export directory is checked against the sha256 in its ``manifest.json``
before it is loaded; a changed file is refused. ``.provider`` says where it runs (``cpu``,
``gpu``, or the ONNX Runtime execution provider actually in use).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


class Predictor:
    """Base class: subclasses set ``format`` and implement ``_predict_batch``.

    ``input_shape`` is ``(H, W, 3)``. ``fixed_batch`` is set for artifacts exported with a fixed
    batch size: ``predict`` then pads the last batch and feeds exactly that many images.
    """

    format = "unknown"
    provider = "cpu"
    fixed_batch: int | None = None

    def __init__(self, path, class_names=None, input_shape=None):
        self.path = Path(path)
        self.class_names = list(class_names) if class_names else None
        self.input_shape = tuple(input_shape) if input_shape else None
        self.manifest_entry: dict | None = None  # set when verified against a manifest

    def _predict_batch(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, images, batch_size: int = 64) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        step = self.fixed_batch or batch_size
        outputs = []
        for start in range(0, len(images), step):
            batch = images[start:start + step]
            count = len(batch)
            if self.fixed_batch and count < step:
                batch = np.concatenate([batch, np.repeat(batch[-1:], step - count, axis=0)])
            outputs.append(np.asarray(self._predict_batch(batch), dtype=np.float32)[:count])
        return np.concatenate(outputs, axis=0) if outputs else np.zeros((0, 0), np.float32)

    def __repr__(self):
        return (f"{type(self).__name__}({str(self.path)!r}, format={self.format!r}, "
                f"provider={self.provider!r})")


def _tensorflow_device() -> str:
    import tensorflow as tf

    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


class KerasPredictor(Predictor):
    format = "keras"

    def __init__(self, path):
        from keras_resnet.models import load_model, read_metadata

        path = Path(path)
        self.model = load_model(path)
        model_file = path if path.suffix == ".keras" else (
            path / "best.keras" if (path / "best.keras").is_file() else path / "model.keras")
        metadata = read_metadata(model_file)
        super().__init__(model_file, metadata.get("class_names"), self.model.input_shape[1:])
        self.provider = _tensorflow_device()

    def _predict_batch(self, images):
        return np.asarray(self.model(images, training=False), dtype=np.float32)


class SavedModelPredictor(Predictor):
    """A SavedModel directory, called through its ``serve`` (or ``serving_default``) signature."""

    format = "savedmodel"

    def __init__(self, path, class_names=None):
        import tensorflow as tf

        self.loaded = tf.saved_model.load(str(path))
        signatures = self.loaded.signatures
        name = next((n for n in ("serve", "serving_default") if n in signatures), None)
        if name is None:
            raise ValueError(f"SavedModel {path} has no serve or serving_default signature")
        self.function = signatures[name]
        inputs = self.function.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(f"SavedModel {path} takes {len(inputs)} inputs; expected one image "
                             f"tensor")
        (self.input_name, spec), = inputs.items()
        self.output_name = next(iter(self.function.structured_outputs))
        super().__init__(path, class_names, spec.shape[1:])
        self.fixed_batch = spec.shape[0]
        self.provider = _tensorflow_device()

    def _predict_batch(self, images):
        import tensorflow as tf

        outputs = self.function(**{self.input_name: tf.constant(images)})
        return outputs[self.output_name].numpy()


class OnnxPredictor(Predictor):
    """An ONNX file in ONNX Runtime; the CUDA provider when ``onnxruntime-gpu`` offers it."""

    format = "onnx"
    PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")

    def __init__(self, path, class_names=None):
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = [p for p in self.PREFERRED_PROVIDERS if p in available] or available
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise ValueError(f"ONNX Runtime cannot load {path}: {error}") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.output_name = self.session.get_outputs()[0].name
        stored = self.session.get_modelmeta().custom_metadata_map.get("class_names")
        shape = model_input.shape
        super().__init__(path, class_names or (json.loads(stored) if stored else None),
                         shape[1:])
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.provider = self.session.get_providers()[0]

    def _predict_batch(self, images):
        return self.session.run([self.output_name], {self.input_name: images})[0]


class LiteRTPredictor(Predictor):
    """A ``.tflite`` file in the LiteRT interpreter (``ai_edge_litert``).

    Goes through the model's signature runner, which resizes a dynamic batch by itself. Models
    with integer input or output (not ours: our int8 models keep float32 input and output) are
    quantized and dequantized here with the tensor's scale and zero point.
    """

    format = "tflite"

    def __init__(self, path, class_names=None, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        if num_threads is None:
            # LiteRT's own default is one thread (ResNet-50 at 224: 81 ms against 42 ms on two
            # cores); use every core this process may run on, as ONNX Runtime does.
            num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                else (os.cpu_count() or 1)
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        except ValueError as error:
            raise ValueError(f"LiteRT cannot load {path}: {error}") from None
        signatures = self.interpreter.get_signature_list()
        if signatures:
            name = "serve" if "serve" in signatures else next(iter(signatures))
            self.runner = self.interpreter.get_signature_runner(name)
            inputs, outputs = self.runner.get_input_details(), self.runner.get_output_details()
            (self.input_name, self.input_detail), = inputs.items()
            self.output_name, self.output_detail = next(iter(outputs.items()))
        else:
            raise ValueError(f"{path} has no signature; re-export it with keras-resnet")
        shape = self.input_detail["shape_signature"]
        super().__init__(path, class_names, [int(d) for d in shape[1:]])
        self.fixed_batch = int(shape[0]) if shape[0] > 0 else None  # -1: dynamic batch
        self.provider = "cpu"

    def _predict_batch(self, images):
        detail = self.input_detail
        if np.issubdtype(detail["dtype"], np.integer):
            scale, zero_point = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            images = np.clip(np.round(images / scale + zero_point), info.min, info.max)
        outputs = self.runner(**{self.input_name: images.astype(detail["dtype"])})
        output = outputs[self.output_name]
        if np.issubdtype(output.dtype, np.integer):
            scale, zero_point = self.output_detail["quantization"]
            output = (output.astype(np.float32) - zero_point) * scale
        return output


# file suffix -> predictor class; a directory with saved_model.pb is a SavedModel
SUFFIXES = {".onnx": OnnxPredictor, ".tflite": LiteRTPredictor}


def _artifact_class(path: Path):
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return SavedModelPredictor
    return SUFFIXES.get(path.suffix.lower())


def load_artifact(path, *, verify: bool = True) -> Predictor:
    """A ``Predictor`` for any model or artifact the package writes.

    ``path``: a ``.keras`` file, a run directory, a SavedModel directory, an ``.onnx`` or
    ``.tflite`` file, or an export directory holding exactly one artifact. When the artifact is
    listed in its directory's ``manifest.json`` its sha256 is checked first (``verify=False``
    skips that) and a mismatch raises ``ValueError``; class names come from the manifest.
    """
    from keras_resnet.export.manifest import find_entry, read_manifest, verify_entry

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model or artifact: {path}")
    if path.suffix == ".keras" or (path.is_dir() and any(
            (path / n).is_file() for n in ("best.keras", "model.keras"))):
        return KerasPredictor(path)
    if path.is_dir() and _artifact_class(path) is None:
        manifest = read_manifest(path)
        if manifest is None:
            raise ValueError(f"not a model this package can load: {path}")
        paths = [entry["path"] for entry in manifest["artifacts"]]
        if len(paths) != 1:
            raise ValueError(f"export directory {path} holds {len(paths)} artifacts "
                             f"({', '.join(paths) or 'none'}); pass the one to load")
        path = path / paths[0]
    predictor_class = _artifact_class(path)
    if predictor_class is None:
        raise ValueError(f"not a model this package can load: {path} (expected .keras, "
                         f".onnx, .tflite, a SavedModel or a run directory)")
    manifest, entry = find_entry(path)
    if verify and entry is not None:
        problem = verify_entry(path.parent, entry)
        if problem:
            raise ValueError(problem)
    predictor = predictor_class(path, class_names=(manifest or {}).get("class_names"))
    predictor.manifest_entry = entry
    return predictor
