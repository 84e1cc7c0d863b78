"""Saving models with their metadata (class names, architecture, recipe).

A ``.keras`` file is a zip archive; we add one member, ``keras_resnet.json``, which
``keras.models.load_model`` ignores. Plain Keras therefore loads our files unchanged, and
``read_metadata`` gives the class names back. Writes are atomic: a temporary file in the same
folder, then ``os.replace``, so a crash never leaves half a model behind.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import keras

METADATA_MEMBER = "keras_resnet.json"


def save_model(model: keras.Model, path, metadata: dict | None = None) -> Path:
    """Save ``model`` to ``path`` (``.keras``) atomically, with ``metadata`` inside."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model files end in .keras, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        if metadata:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2, default=str))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_metadata(path) -> dict:
    """The metadata saved with a ``.keras`` file (empty if it has none)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_MEMBER not in archive.namelist():
                return {}
            return json.loads(archive.read(METADATA_MEMBER))
    except zipfile.BadZipFile:
        raise ValueError(f"not a .keras model file (not a zip archive): {path}") from None


def load_model(path, *, compile: bool = False) -> keras.Model:
    """``keras.models.load_model`` with a one-line error for a missing or broken file."""
    path = Path(path)
    if path.is_dir():
        for candidate in ("best.keras", "model.keras"):
            if (path / candidate).is_file():
                path = path / candidate
                break
        else:
            raise FileNotFoundError(f"no best.keras or model.keras in run directory {path}")
    read_metadata(path)  # validates that the file exists and is an archive
    return _single_input(keras.models.load_model(path, compile=compile))


def _single_input(model: keras.Model) -> keras.Model:
    """``model``, taking a tensor where it was saved taking a list of one tensor.

    Files saved by early versions declared their input as ``[images]``. Calling such a model on
    a plain tensor works but makes Keras warn about the structure of its inputs on every call,
    so the same layers are wrapped again as a one-input functional model. Weights are shared,
    not copied.
    """
    try:
        inputs = model.input
    except (AttributeError, ValueError):  # a subclassed model has no symbolic input
        return model
    if not isinstance(inputs, list) or len(inputs) != 1:
        return model
    outputs = model.outputs[0] if len(model.outputs) == 1 else model.outputs
    return keras.Model(model.inputs[0], outputs, name=model.name)
