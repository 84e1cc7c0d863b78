"""Shared test fixtures.

Tests read small per-class subsets of the real CIFAR-10 JPEGs in ``../shared`` (never copied
into the repository) and generate any other data they need.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests run TensorFlow as the product sets it up: keras_resnet's import (before any test
# module imports Keras) chooses TensorFlow's CPU kernels.
import keras_resnet  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
CIFAR10_TRAIN = REPO.parent / "shared" / "datasets" / "cifar10" / "train"
# For tests of the training machinery (checkpoints, resume, NaN, distribution, search), where
# the network does not matter: ResNet-9 at a quarter width makes a short fit about 2.3x faster
# than ResNet-20 (8.6 s against 20.2 s on a 2-core CPU), most of it the train step's tracing.
SMALL_MODEL = ["arch=resnet9", "model.width_multiplier=0.25"]


def cifar_subset(dest: Path, per_class: int, classes=None, offset: int = 0) -> Path:
    """A class-folder dataset of symlinks to ``per_class`` real CIFAR-10 JPEGs per class."""
    if not CIFAR10_TRAIN.is_dir():
        pytest.fail(f"CIFAR-10 JPEGs not found at {CIFAR10_TRAIN}")
    classes = classes or sorted(p.name for p in CIFAR10_TRAIN.iterdir() if p.is_dir())
    for name in classes:
        files = sorted((CIFAR10_TRAIN / name).glob("*.jpg"))[offset:offset + per_class]
        (dest / name).mkdir(parents=True, exist_ok=True)
        for f in files:
            link = dest / name / f.name
            if not link.exists():
                link.symlink_to(f)
    return dest


@pytest.fixture(autouse=True)
def float32_policy_after_each_test():
    """Tests that train under mixed precision must not change the models of later tests."""
    yield
    import keras

    if keras.config.dtype_policy().name != "float32":
        keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def cifar_small(tmp_path_factory) -> Path:
    """20 real CIFAR-10 images of each of the 10 classes (200 images)."""
    return cifar_subset(tmp_path_factory.mktemp("cifar_small"), per_class=20)


@pytest.fixture(scope="session")
def cifar_heldout(tmp_path_factory) -> Path:
    """Another 10 images per class, disjoint from ``cifar_small``."""
    return cifar_subset(tmp_path_factory.mktemp("cifar_heldout"), per_class=10, offset=4000)


# pytest-xdist hands whole files to its two workers, in collection order (pytest.ini turns off
# its reordering by test count). The longest files go first, so that no long file starts last
# and leaves one worker idle at the end. Serial seconds on a 2-core AVX2 CPU, longest first.
LONGEST_FILES = ("test_fit.py", "test_models.py", "test_export.py", "test_finetune.py",
                 "test_airbench_options.py", "test_tune.py", "test_whitening.py",
                 "test_evaluate_model.py", "test_fit_distributed.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: each file keeps its own order
