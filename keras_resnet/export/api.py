"""``export``: a Keras model in, verified deployment artifacts and ``manifest.json`` out.

Every artifact is written to a staging folder inside DIR, loaded back with the same predictor
``load_artifact`` uses, run on the parity images and compared with the Keras model. Only those
that pass the gate are moved into DIR; the rest are listed under ``rejected`` in the manifest and
``export`` raises ``ExportGateError`` (after publishing the ones that passed).
"""
from __future__ import annotations

import datetime
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from keras_resnet.export.manifest import (MANIFEST_NAME, MANIFEST_VERSION, artifact_sha256,
                                          artifact_size, package_versions, read_manifest,
                                          write_json_atomic)
from keras_resnet.export.onnx import DEFAULT_OPSET, write_onnx
from keras_resnet.export.parity import compare, describe_failure, gate_for
from keras_resnet.export.predictor import LiteRTPredictor, OnnxPredictor, SavedModelPredictor
from keras_resnet.export.samples import load_samples
from keras_resnet.export.savedmodel import INPUT_NAME, OUTPUT_NAME, write_savedmodel
from keras_resnet.export.source import resolve_source
from keras_resnet.export.tflite import QUANTIZATIONS, write_tflite

FORMATS = ("savedmodel", "onnx", "tflite")
# (format, quantization) -> artifact name in the export directory
ARTIFACT_NAMES = {
    ("savedmodel", "none"): "saved_model",
    ("onnx", "none"): "model.onnx",
    ("tflite", "none"): "model.tflite",
    ("tflite", "float16"): "model_float16.tflite",
    ("tflite", "dynamic"): "model_dynamic.tflite",
    ("tflite", "int8"): "model_int8.tflite",
}
PREDICTORS = {"savedmodel": SavedModelPredictor, "onnx": OnnxPredictor,
              "tflite": LiteRTPredictor}
STAGED_SAVEDMODEL = "saved_model"
MIN_OPSET, MAX_OPSET = 13, 18


class ExportGateError(RuntimeError):
    """One or more artifacts failed the parity gate (or failed to convert) and were not
    published. ``failures`` holds one line per artifact, ``manifest`` the written manifest."""

    def __init__(self, failures: list[str], manifest: dict, manifest_path: Path):
        self.failures, self.manifest, self.manifest_path = failures, manifest, manifest_path
        super().__init__("parity gate failed, not published: " + "; ".join(failures))


def _as_list(value, allowed, what) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    items = [part.strip().lower() for item in items for part in str(item).split(",")
             if part.strip()]
    if "all" in items:
        return list(allowed)
    bad = [item for item in items if item not in allowed]
    if bad or not items:
        raise ValueError(f"{what} must be one or more of {', '.join(allowed)} or all, "
                         f"got {', '.join(bad) or 'nothing'}")
    return list(dict.fromkeys(items))


def plan_artifacts(formats="all", quantize="none") -> list[tuple[str, str]]:
    """The ``(format, quantization)`` pairs to export; quantization applies to TFLite only."""
    formats = _as_list(formats, FORMATS, "format")
    quantizations = _as_list(quantize, QUANTIZATIONS, "quantize")
    if quantizations != ["none"] and "tflite" not in formats:
        raise ValueError("--quantize applies to TFLite only; add --format tflite (or all)")
    plan = [(fmt, "none") for fmt in formats if fmt != "tflite"]
    if "tflite" in formats:
        plan += [("tflite", q) for q in quantizations]
    return plan


def _parse_batch(batch) -> int | None:
    if batch is None or str(batch).lower() == "dynamic":
        return None
    try:
        value = int(batch)
    except (TypeError, ValueError):
        raise ValueError(f"batch must be 'dynamic' or a positive integer, got {batch!r}") from None
    if value < 1:
        raise ValueError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    return value


def default_output(model, arch) -> Path:
    """``RUN/export`` for a run directory, ``NAME_export`` beside a ``.keras`` file, else
    ``ARCH_export`` in the current folder."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        return path / "export" if path.is_dir() else path.with_name(f"{path.stem}_export")
    if arch:
        return Path(f"{arch}_export")
    raise ValueError("pass output= (the export directory) for an in-memory model")


def _input_spec(model, image_size, batch_size) -> dict:
    spec = {"name": INPUT_NAME, "shape": [batch_size, *image_size, 3], "dtype": "float32",
            "layout": "NHWC", "color": "RGB", "value_range": [0, 255]}
    try:
        layer = model.get_layer("preprocess")
    except ValueError:
        spec["preprocessing"] = {"baked_in": False,
                                 "note": "the model has no preprocessing layer"}
        return spec
    config = layer.get_config()
    spec["preprocessing"] = {"baked_in": True, "layer": type(layer).__name__,
                             "formula": "pixels * scale + offset",
                             "scale": config.get("scale"), "offset": config.get("offset")}
    return spec


def _output_spec(model, batch_size, num_classes) -> dict:
    activation = model.layers[-1].get_config().get("activation")
    return {"name": OUTPUT_NAME, "shape": [batch_size, num_classes], "dtype": "float32",
            "activation": activation if isinstance(activation, str) else None}


def _reference_outputs(model, images, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([np.asarray(model(images[i:i + batch_size], training=False),
                                      dtype=np.float32)
                           for i in range(0, len(images), batch_size)])


def _build(fmt, quantization, target, source, staging, *, opset, batch_size, calibration):
    if fmt == "savedmodel":
        shutil.copytree(staging / STAGED_SAVEDMODEL, target)
    elif fmt == "onnx":
        write_onnx(source.model, target, source.image_size, opset=opset,
                   batch_size=batch_size, class_names=source.class_names)
    else:
        write_tflite(staging / STAGED_SAVEDMODEL, target, quantization=quantization,
                     calibration_images=None if calibration is None else calibration.images)


def _publish(staged: Path, target: Path, trash: Path):
    """Move ``staged`` to ``target``, replacing what is there (a file atomically)."""
    if target.is_dir() and not target.is_symlink():
        os.replace(target, trash / target.name)
    os.replace(staged, target)


def _same_source(old: dict | None, new: dict) -> bool:
    if not old:
        return False
    old_sha = old.get("source", {}).get("sha256")
    return (old_sha is not None and old_sha == new["source"].get("sha256")
            and old.get("input") == new["input"] and old.get("class_names") == new["class_names"])


def export(model=None, output=None, *, formats="all", quantize="none", arch: str | None = None,
           num_classes: int | None = None, image_size=None, weights: str | None = None,
           parity_data=None, calibration_data=None, parity_samples: int = 256,
           calibration_samples: int = 256, opset: int = DEFAULT_OPSET, batch="dynamic",
           max_abs_diff: float | None = None, min_top1_agreement: float | None = None,
           raise_on_failure: bool = True, log=None) -> dict:
    """Export ``model`` to SavedModel, ONNX and/or TFLite in ``output``, each parity-checked.

    Args:
        model: a ``.keras`` file, a run directory (its ``best.keras``) or a ``keras.Model``;
            or ``None`` with ``arch`` for a zoo architecture (random weights, or ``weights``
            ``"imagenet"``/a ``.h5`` path for the ``keras_*`` entries).
        output: the export directory (default: ``RUN/export``, ``NAME_export`` beside a
            ``.keras`` file, or ``ARCH_export``).
        formats: ``"savedmodel"``, ``"onnx"``, ``"tflite"``, a list or comma list, or ``"all"``.
        quantize: TFLite quantization(s): ``"none"``, ``"float16"``, ``"dynamic"``, ``"int8"``,
            a list or comma list, or ``"all"``.
        parity_data, calibration_data: a data spec (folder, ``cifar10``, ``.npz``...), an array
            of 0-255 NHWC images or an ``(images, labels)`` pair. Parity uses ``parity_data``,
            else the calibration data; int8 calibrates on ``calibration_data``, else the parity
            data. Generated images (with a warning) only when neither is given.
        opset: ONNX opset. batch: ``"dynamic"`` or a fixed batch size.
        max_abs_diff, min_top1_agreement: override the gate thresholds (``parity.GATES``).
        raise_on_failure: raise ``ExportGateError`` if any artifact is rejected.
        log: optional ``callable(str)`` for progress lines.

    Returns the manifest (also written to ``output/manifest.json``).
    """
    log = log or (lambda message: None)
    plan = plan_artifacts(formats, quantize)
    batch_size = _parse_batch(batch)
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ValueError(f"opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    for name, value, low, high in (("max_abs_diff", max_abs_diff, 0.0, float("inf")),
                                   ("min_top1_agreement", min_top1_agreement, 0.0, 1.0)):
        if value is not None and not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    output = Path(output) if output is not None else default_output(model, arch)
    source = resolve_source(model, arch=arch, num_classes=num_classes, image_size=image_size,
                            weights=weights)
    log(f"model: {source.arch or source.model.name}, {len(source.class_names)} classes, "
        f"{source.image_size[0]}x{source.image_size[1]} input")

    run_warnings = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parity = load_samples(parity_data if parity_data is not None else calibration_data,
                              image_size=source.image_size, limit=parity_samples,
                              class_names=source.class_names, purpose="parity")
        calibration = None
        if any(q == "int8" for _, q in plan):
            if calibration_data is None and parity_data is not None:
                warnings.warn("no --calibration-data: int8 is calibrated on the parity images, "
                              "so its parity check is not independent of calibration")
            calibration = load_samples(
                calibration_data if calibration_data is not None else parity_data,
                image_size=source.image_size, limit=calibration_samples,
                class_names=source.class_names, purpose="calibration")
    for warning in caught:  # recorded in the manifest, then raised again for the caller
        run_warnings.append(str(warning.message))
        log(f"warning: {warning.message}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
    log(f"parity images: {parity.description['num_images']} from "
        f"{parity.description['source']}")
    reference = _reference_outputs(source.model, parity.images)

    output.mkdir(parents=True, exist_ok=True)
    old = read_manifest(output)  # an earlier export here (a broken one stops us before work)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=output))
    published, rejected, failures = [], [], []
    try:
        if any(fmt in ("savedmodel", "tflite") for fmt, _ in plan):
            write_savedmodel(source.model, staging / STAGED_SAVEDMODEL, source.image_size,
                             batch_size)
        for fmt, quantization in plan:
            name = ARTIFACT_NAMES[(fmt, quantization)]
            staged = staging / "artifacts" / name
            staged.parent.mkdir(exist_ok=True)
            measure, threshold = gate_for(quantization, max_abs_diff, min_top1_agreement)
            entry = {"name": f"{fmt}" + ("" if quantization == "none" else f"_{quantization}"),
                     "format": fmt, "path": name, "quantization": quantization,
                     "io_dtype": "float32"}
            if fmt == "onnx":
                entry["opset"] = int(opset)
            if quantization == "int8":
                entry["calibration"] = calibration.description
            log(f"{entry['name']}: converting")
            try:
                _build(fmt, quantization, staged, source, staging, opset=int(opset),
                       batch_size=batch_size, calibration=calibration)
                predictor = PREDICTORS[fmt](staged, class_names=source.class_names)
                outputs = predictor.predict(parity.images)
            except Exception as error:  # a converter or runtime failure rejects the artifact
                entry.update(path=None, sha256=None, size_bytes=None,
                             error=f"{type(error).__name__}: {error}".splitlines()[0],
                             parity={"passed": False, "check": measure, "threshold": threshold})
                rejected.append(entry)
                failures.append(f"{entry['name']}: conversion or loading failed: "
                                f"{entry['error']}")
                log(f"{entry['name']}: REJECTED ({entry['error']})")
                continue
            entry["provider"] = predictor.provider
            entry["parity"] = compare(reference, outputs, measure=measure, threshold=threshold,
                                      labels=parity.labels)
            entry["parity"]["data"] = parity.description["source"]
            entry["sha256"] = artifact_sha256(staged)
            entry["size_bytes"] = artifact_size(staged)
            summary = (f"max_abs_diff {entry['parity']['max_abs_diff']:.3g}, top1_agreement "
                       f"{entry['parity']['top1_agreement']:.2%}")
            if entry["parity"]["passed"]:
                published.append((entry, staged))
                log(f"{entry['name']}: passed ({summary}) -> {output / name}")
            else:
                failures.append(describe_failure(entry["name"], entry["parity"]))
                entry.update(path=None, sha256=None, staged_sha256=entry["sha256"])
                rejected.append(entry)
                log(f"{entry['name']}: REJECTED ({failures[-1]})")

        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "architecture": source.arch,
            "source": source.description,
            "class_names": source.class_names,
            "num_classes": len(source.class_names),
            "input": _input_spec(source.model, source.image_size, batch_size),
            "output": _output_spec(source.model, batch_size, len(source.class_names)),
            "artifacts": [entry for entry, _ in published],
            "rejected": rejected,
            "warnings": run_warnings,
            "versions": package_versions(),
        }
        new_names = {entry["path"] for entry, _ in published}
        kept = [e for e in (old or {}).get("artifacts", [])
                if _same_source(old, manifest) and e["path"] not in new_names]
        manifest["artifacts"] = kept + manifest["artifacts"]
        trash = staging / "replaced"
        trash.mkdir()
        for entry, staged in published:
            _publish(staged, output / entry["path"], trash)
        # Artifacts of an earlier export of a different model would no longer match the
        # manifest; they are removed rather than left beside it unverifiable.
        keep_paths = {e["path"] for e in manifest["artifacts"]}
        for stale in (old or {}).get("artifacts", []):
            stale_path = output / stale["path"]
            if stale["path"] not in keep_paths and stale_path.exists():
                log(f"removing {stale_path}: from an earlier export of a different model")
                os.replace(stale_path, trash / f"stale-{stale['path']}")
        manifest_path = write_json_atomic(manifest, output / MANIFEST_NAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"manifest: {manifest_path}")
    if failures and raise_on_failure:
        raise ExportGateError(failures, manifest, manifest_path)
    return manifest
