"""The data layer: sources, the ImageData contract, the split, read_image, shapes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import cifar_subset
from keras_resnet.data import (ImageData, generate_shapes, list_image_files, load_data,
                               read_image, stratified_split)

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


def _collect(dataset):
    images, labels = [], []
    for x, y in dataset.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def test_shapes_is_deterministic_balanced_and_seeded():
    x1, y1 = generate_shapes("train", classes=4, count=40, size=32, seed=3)
    x2, y2 = generate_shapes("train", classes=4, count=40, size=32, seed=3)
    x3, _ = generate_shapes("train", classes=4, count=40, size=32, seed=4)
    assert x1.shape == (40, 32, 32, 3) and x1.dtype == np.uint8 and y1.dtype == np.int32
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert np.bincount(y1).tolist() == [10, 10, 10, 10]
    # The validation stream does not depend on the size of the training stream.
    v1, _ = generate_shapes("val", classes=4, count=8, seed=3)
    v2, _ = generate_shapes("val", classes=4, count=8, seed=3)
    np.testing.assert_array_equal(v1, v2)
    assert x1.std() > 20          # textured, not blank


def test_load_shapes_follows_the_image_data_contract():
    data = load_data("shapes:classes=3,train=90,val=30", batch_size=16)
    assert isinstance(data, ImageData)
    assert data.class_names == ["circle", "square", "triangle"]
    assert data.num_classes == 3
    assert data.image_shape == (32, 32, 3)
    assert data.num_examples == {"train": 90, "val": 30, "test": 0}
    assert data.test is None and data.bad_files == []
    x, y = next(iter(data.train))
    assert x.shape == (16, 32, 32, 3) and y.shape == (16,)
    assert y.dtype.name == "int32"
    assert x.dtype.name in ("uint8", "float32")
    assert float(np.max(x)) > 1.5      # raw 0-255 pixels, not normalised
    vx, vy = _collect(data.val)
    expected_x, expected_y = generate_shapes("val", classes=3, count=30)
    np.testing.assert_array_equal(vx, expected_x)    # val: unshuffled, untouched
    np.testing.assert_array_equal(vy, expected_y)
    assert len(_collect(data.dataset("all"))[1]) == 120


def test_shapes_options_are_validated():
    with pytest.raises(ValueError, match="classes"):
        load_data("shapes:classes=1")
    with pytest.raises(ValueError, match="bogus"):
        load_data("shapes:bogus=3")


def test_stratified_split_is_per_class_and_seeded():
    labels = np.repeat(np.arange(5), [10, 10, 20, 1, 3])
    train, val = stratified_split(labels, 0.2, seed=7)
    assert np.bincount(labels[val], minlength=5).tolist() == [2, 2, 4, 0, 1]
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    again = stratified_split(labels, 0.2, seed=7)
    np.testing.assert_array_equal(val, again[1])
    assert not np.array_equal(val, stratified_split(labels, 0.2, seed=8)[1])
    assert len(stratified_split(labels, 0.0)[1]) == 0


def test_folder_split_is_stratified_deterministic_and_disjoint(cifar_small):
    data = load_data(str(cifar_small), batch_size=32, val_split=0.1, seed=1)
    assert data.class_names == CIFAR_CLASSES
    assert data.num_examples == {"train": 180, "val": 20, "test": 0}
    train_files = set(data.splits["train"].files)
    val_files = set(data.splits["val"].files)
    assert not train_files & val_files
    _, val_labels = _collect(data.val)
    assert np.bincount(val_labels).tolist() == [2] * 10
    same = load_data(str(cifar_small), batch_size=32, val_split=0.1, seed=1)
    assert set(same.splits["val"].files) == val_files
    other = load_data(str(cifar_small), batch_size=32, val_split=0.1, seed=2)
    assert set(other.splits["val"].files) != val_files
    # Pixels are the files' own: the first val image is the decoded first val file.
    vx, _ = _collect(data.val)
    np.testing.assert_array_equal(vx[0], read_image(data.splits["val"].files[0]))


def test_split_seed_fixes_the_held_out_images_apart_from_the_training_seed(cifar_small):
    """Runs with other seeds (shuffling, augmentation, initialisation) must be scored on the
    same validation images: ``split_seed`` picks them, ``seed`` alone does not move them."""
    from keras_resnet.training.config import load_config
    from keras_resnet.training.fit import load_training_data

    held_out = set(load_data(str(cifar_small), batch_size=32, val_split=0.1,
                             seed=0).splits["val"].files)
    for seed in (1, 5):
        config = load_config(None, {"data.spec": str(cifar_small), "seed": seed})
        assert config["data"]["split_seed"] == 0
        assert set(load_training_data(config).splits["val"].files) == held_out
    other = load_config(None, {"data.spec": str(cifar_small), "data.split_seed": 3})
    assert set(load_training_data(other).splits["val"].files) != held_out
    assert set(load_data(str(cifar_small), batch_size=32, val_split=0.1, seed=9,
                         split_seed=3).splits["val"].files) == \
        set(load_training_data(other).splits["val"].files)


def test_jpeg_pixels_match_pillow_exactly(cifar_small):
    """The pipeline decodes JPEGs as Pillow does (libjpeg's accurate DCT), not with the fast
    DCT that tf.io.decode_image uses, which is ~1 level per pixel off on these files."""
    data = load_data(str(cifar_small), batch_size=32, val_split=0.1, seed=1)
    vx, _ = _collect(data.val)
    with_pillow = np.stack([np.asarray(Image.open(f).convert("RGB"))
                            for f in data.splits["val"].files])
    np.testing.assert_array_equal(vx, with_pillow)


def test_folder_with_split_subfolders(tmp_path):
    root = tmp_path / "data"
    cifar_subset(root / "train", per_class=6, classes=["cat", "dog", "ship"])
    cifar_subset(root / "validation", per_class=2, classes=["cat", "dog", "ship"], offset=100)
    cifar_subset(root / "test", per_class=3, classes=["cat", "dog", "ship"], offset=200)
    data = load_data(str(root), batch_size=4, val_split=0.5)
    assert data.class_names == ["cat", "dog", "ship"]
    assert data.num_examples == {"train": 18, "val": 6, "test": 9}   # val_split unused
    _, test_labels = _collect(data.test)
    assert test_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    x, y = _collect(data.dataset("train"))
    assert x.shape == (18, 32, 32, 3) and x.dtype == np.uint8
    assert y.tolist() == sorted(y.tolist())                     # unshuffled
    shuffled = [_collect(data.train)[1].tolist() for _ in range(2)]
    assert sorted(shuffled[0]) == sorted(y.tolist())
    assert shuffled[0] != y.tolist()


def test_one_hot_labels(cifar_small):
    data = load_data(str(cifar_small), batch_size=8, one_hot=True)
    x, y = next(iter(data.train))
    assert y.shape == (8, 10) and y.dtype.name == "float32"
    np.testing.assert_allclose(np.sum(y, axis=1), 1.0)
    _, vy = next(iter(data.val))
    assert vy.shape == (8, 10)
    _, int_labels = next(iter(data.dataset("val")))
    np.testing.assert_array_equal(np.argmax(vy, axis=1), int_labels)


def test_read_image_converts_modes_and_names_bad_files(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    base.save(tmp_path / "rgb.png")
    base.convert("L").save(tmp_path / "gray.png")
    base.convert("RGBA").save(tmp_path / "alpha.png")
    base.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    base.convert("P").save(tmp_path / "palette.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "alpha.png"), rgb)
    gray = read_image(tmp_path / "gray.png")
    assert gray.shape == (20, 30, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    cmyk = read_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (20, 30, 3) and np.abs(cmyk.astype(int) - rgb).mean() < 12
    palette = read_image(tmp_path / "palette.bmp")
    expected = np.asarray(base.convert("P").convert("RGB"))
    np.testing.assert_array_equal(palette, expected)
    resized = read_image(tmp_path / "rgb.png", image_size=16)
    assert resized.shape == (16, 16, 3) and resized.dtype == np.uint8
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        read_image(tmp_path / "broken.jpg")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


def test_list_image_files_filters_and_sorts(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ["b/z.PNG", "a.jpg", "b/c.jpeg", "notes.txt", ".DS_Store", ".hidden/x.jpg",
                 "._a.jpg", "d.gif", "e.bmp"]:
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    assert found == ["a.jpg", "b/c.jpeg", "b/z.PNG", "d.gif", "e.bmp"]
    with pytest.raises(FileNotFoundError):
        list_image_files(tmp_path / "nope")


@pytest.mark.benchmark
def test_resnet20_learns_shapes_well_above_chance_in_a_few_epochs():
    """Slow (about a minute on 2 cores): the built-in data is learnable, not noise."""
    import keras

    from keras_resnet.models import create_model

    keras.utils.set_random_seed(0)
    data = load_data("shapes", batch_size=64, augment="flip")
    model = create_model("resnet20", num_classes=data.num_classes, input_shape=data.image_shape)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=8)
    history = model.fit(data.train, validation_data=data.val, epochs=4, verbose=0)
    assert history.history["val_accuracy"][-1] > 0.5        # chance: 1/6
