"""Sources other than folders: .npz, CIFAR python batches, TFDS (real code path, no network)."""
from __future__ import annotations

import pickle
import socket

import numpy as np
import pytest
from PIL import Image

from conftest import CIFAR10_TRAIN
from keras_resnet.data import check_data, load_data, tfds_source

tfds = pytest.importorskip("tensorflow_datasets")


def _cifar_pixels(classes=("cat", "dog", "ship"), per_class=4):
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((CIFAR10_TRAIN / name).glob("*.jpg"))[:per_class]:
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def _collect(dataset):
    parts = list(dataset.as_numpy_iterator())
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def test_npz_source_with_class_names_and_test_split(tmp_path):
    x, y = _cifar_pixels()
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y, x_test=x[:3], y_test=y[:3], class_names=np.array(["c", "d", "s"]))
    data = load_data(str(path), batch_size=5, val_split=0.25, seed=0)
    assert data.class_names == ["c", "d", "s"]
    assert data.num_examples == {"train": 9, "val": 3, "test": 3}
    tx, ty = _collect(data.test)
    np.testing.assert_array_equal(tx, x[:3])
    np.testing.assert_array_equal(ty, y[:3])
    ax, ay = _collect(data.dataset("all"))
    assert sorted(map(bytes, ax[:12])) == sorted(map(bytes, x))  # every image, once


def test_npz_grayscale_and_errors(tmp_path):
    gray = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "gray.npz", x=gray, y=np.array([0, 1, 0, 1, 0, 1]))
    data = load_data(str(tmp_path / "gray.npz"), batch_size=6, val_split=0.0)
    assert data.image_shape == (28, 28, 3) and data.class_names == ["0", "1"]
    x, _ = _collect(data.dataset("train"))
    np.testing.assert_array_equal(x[..., 1], gray)
    np.savez(tmp_path / "bad.npz", images=gray)
    with pytest.raises(ValueError, match="'x' and 'y'"):
        load_data(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "short.npz", x=gray, y=np.array([0, 1]))
    with pytest.raises(ValueError, match="6 images but y has 2"):
        load_data(str(tmp_path / "short.npz"))
    (tmp_path / "notes.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="not an .npz"):
        load_data(str(tmp_path / "notes.csv"))


def _write_cifar_batches(folder, x, y, names):
    """The layout and pickle format of the CIFAR-10 "python version" download."""
    folder.mkdir()
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    half = len(x) // 2
    for i, part in enumerate([slice(0, half), slice(half, len(x))], start=1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": rows[part], b"labels": y[part].tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": rows[:2], b"labels": y[:2].tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names]}, f)


def test_cifar_python_batches_folder(tmp_path):
    x, y = _cifar_pixels()
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar_batches(folder, x, y, ["cat", "dog", "ship"])
    data = load_data(str(folder), batch_size=4, val_split=0.0)
    assert data.class_names == ["cat", "dog", "ship"]
    assert data.num_examples == {"train": 12, "val": 0, "test": 2}
    tx, ty = _collect(data.dataset("train"))
    np.testing.assert_array_equal(tx, x)
    np.testing.assert_array_equal(ty, y)
    report = check_data(str(folder))
    assert report["source"] == "cifar-batches"
    assert report["counts"] == {"cat": 6, "dog": 4, "ship": 4}      # train + test
    assert report["splits"]["test"]["num_images"] == 2


def test_cifar10_shorthand_reads_the_keras_download_when_present(tmp_path, monkeypatch):
    x, y = _cifar_pixels(per_class=2)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".keras" / "datasets").mkdir(parents=True)
    _write_cifar_batches(tmp_path / ".keras" / "datasets" / "cifar-10-batches-py", x, y,
                         ["cat", "dog", "ship"])
    data = load_data("cifar10", batch_size=4, val_split=0.0)
    assert data.num_examples["train"] == 6 and data.class_names == ["cat", "dog", "ship"]


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty TFDS data dir and no network (sockets refuse to connect)."""
    def refuse(*args, **kwargs):
        raise OSError("network is disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setenv("HOME", str(tmp_path))        # no ~/.keras/datasets copy either


@pytest.mark.parametrize("spec", ["tfds:cifar10", "cifar100"])
def test_tfds_without_network_fails_with_one_line_naming_offline_options(no_network, spec):
    with pytest.raises(ValueError) as raised:
        load_data(spec)
    message = str(raised.value)
    assert "\n" not in message
    assert "cannot download TFDS dataset" in message and "unreachable" in message
    for alternative in ("folder", ".npz", "cifar-10-batches-py", "shapes"):
        assert alternative in message


def test_unknown_tfds_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown TFDS dataset 'no_such_dataset_xyz'"):
        load_data("tfds:no_such_dataset_xyz")


def test_tfds_prepared_dataset_goes_through_the_same_pipeline(monkeypatch, tmp_path):
    """TFDS's own mock stands in for a prepared dataset; everything after it is the real path:
    builder, encoded images (SkipDecoding), label scan, stratified split, decode."""
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(tfds_source, "check_network", lambda builder, name: None)
    monkeypatch.setattr(tfds_source, "SPLIT_NAMES", {"train": "train", "test": "test"})
    with tfds.testing.mock_data(num_examples=40):
        data = load_data("tfds:cifar10", batch_size=8, val_split=0.25, seed=0)
        assert data.num_classes == 10 and data.image_shape == (32, 32, 3)
        assert data.num_examples["train"] + data.num_examples["val"] == 40
        assert data.num_examples["test"] == 40
        x, y = _collect(data.dataset("all"))
        assert x.shape == (80, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int32
        vx, vy = _collect(data.val)
        assert len(vy) == data.num_examples["val"]
        train_x, _ = _collect(data.dataset("train"))
        assert not any(np.array_equal(v, t) for v in vx for t in train_x)
        report = check_data("tfds:cifar10", val_split=0.25)
        assert report["num_images"] == 80 and report["image_sizes"] == {"32x32": 80}
