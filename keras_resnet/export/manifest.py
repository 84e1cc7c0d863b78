"""``manifest.json``: what an export directory holds, and proof that it was not changed since.

Each published artifact is listed with its sha256; ``load_artifact`` recomputes it and refuses a
file that no longer matches. A SavedModel is a directory: its hash is the sha256 of a listing of
``relative/path<NUL>sha256-of-file`` lines over every file, sorted by path, so adding, removing,
renaming or editing any file changes it.

Artifacts that failed the parity gate are never published: they are listed under ``rejected``
with ``path: null`` and ``parity.passed: false``; everything under ``artifacts`` passed.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata as package_metadata
from pathlib import Path

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1

# manifest key -> distribution names to try (onnxruntime-gpu installs the same module)
VERSIONED_PACKAGES = {
    "keras_resnet": ("keras-resnet",),
    "keras": ("keras",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "tf2onnx": ("tf2onnx",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "ai_edge_litert": ("ai-edge-litert",),
    "numpy": ("numpy",),
}


def file_sha256(path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_sha256(path) -> str:
    """sha256 of a file, or of a directory's sorted ``path<NUL>file-sha256`` listing."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    listing = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path).as_posix()
        listing.update(f"{relative}\0{file_sha256(file)}\n".encode())
    return listing.hexdigest()


def artifact_size(path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def package_versions() -> dict:
    versions = {}
    for key, distributions in VERSIONED_PACKAGES.items():
        versions[key] = None
        for distribution in distributions:
            try:
                versions[key] = package_metadata.version(distribution)
                break
            except package_metadata.PackageNotFoundError:
                continue
    return versions


def write_json_atomic(data: dict, path) -> Path:
    """Write ``data`` as JSON to ``path`` whole or not at all."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_manifest(directory) -> dict | None:
    """The manifest of an export directory, or ``None`` if it has none."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), list):
        raise ValueError(f"{path} is not a keras-resnet export manifest")
    return manifest


def find_entry(artifact_path) -> tuple[dict | None, dict | None]:
    """``(manifest, entry)`` for an artifact in an export directory; ``None``s if unlisted."""
    artifact_path = Path(artifact_path)
    manifest = read_manifest(artifact_path.parent)
    if manifest is None:
        return None, None
    for entry in manifest["artifacts"]:
        if entry.get("path") == artifact_path.name:
            return manifest, entry
    return manifest, None


def verify_entry(directory, entry: dict) -> str | None:
    """``None`` if the artifact of ``entry`` is intact, else why not."""
    path = Path(directory) / entry["path"]
    if not path.exists():
        return f"{path} is listed in {MANIFEST_NAME} but missing"
    actual = artifact_sha256(path)
    if actual != entry.get("sha256"):
        return (f"{path} does not match the sha256 in {MANIFEST_NAME} (expected "
                f"{str(entry.get('sha256'))[:12]}..., found {actual[:12]}...): it was changed "
                f"after export; refusing to use it")
    if not entry.get("parity", {}).get("passed"):
        return f"{path} did not pass the parity gate; refusing to use it"
    return None


def verify_export(directory) -> list[str]:
    """Every problem found in an export directory (an empty list means all artifacts intact)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {directory}")
    return [problem for entry in manifest["artifacts"]
            if (problem := verify_entry(directory, entry)) is not None]
