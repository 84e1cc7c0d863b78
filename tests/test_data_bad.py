"""Bad data: planted corrupt, truncated, empty and odd files; strict mode; ``data check``."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import CIFAR10_TRAIN, cifar_subset
from keras_resnet.cli.main import cli
from keras_resnet.data import check_data, load_data

EXPECTED_BAD = {
    "cat/truncated.jpg": "truncated",
    "cat/zero.jpg": "empty file",
    "dog/random_bytes.jpg": "not an image",
    "dog/notes.txt": "not an image file",
    "dog/header_only.png": "truncated",
}


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    """Two CIFAR classes of 6 images, plus every kind of bad and odd file a real folder has."""
    root = cifar_subset(tmp_path_factory.mktemp("messy"), per_class=6, classes=["cat", "dog"])
    jpeg = (CIFAR10_TRAIN / "cat" / "0100.jpg").read_bytes()
    (root / "cat" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "cat" / "zero.jpg").write_bytes(b"")
    rng = np.random.default_rng(0)
    (root / "dog" / "random_bytes.jpg").write_bytes(rng.integers(0, 256, 700, np.uint8).tobytes())
    (root / "dog" / "notes.txt").write_text("labelled by hand\n")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    picture = Image.open(CIFAR10_TRAIN / "bird" / "0000.jpg")
    png = root / "dog" / "header_only.png"
    picture.save(png)
    png.write_bytes(png.read_bytes()[:60])
    # Convertible images in a class with a non-ASCII name, with non-ASCII file names.
    birds = root / "oiseaux_été"
    birds.mkdir()
    picture.convert("L").save(birds / "gris_ü.png")
    picture.convert("CMYK").save(birds / "cmyk.jpg", quality=95)
    picture.convert("RGBA").save(birds / "alpha.png")
    picture.convert("P").save(birds / "palette.bmp")
    picture.convert("P").save(birds / "anim.gif")
    (root / "empty_class").mkdir()
    return root


def _bad(source_bad_files, root):
    return {Path(path).relative_to(root).as_posix(): reason for path, reason in source_bad_files}


def test_bad_files_are_found_listed_and_skipped(messy, caplog):
    with caplog.at_level(logging.WARNING, logger="keras_resnet.data"):
        data = load_data(str(messy), batch_size=4, val_split=0.0)
    bad = _bad(data.bad_files, messy)
    assert set(bad) == set(EXPECTED_BAD)
    for name, words in EXPECTED_BAD.items():
        assert words in bad[name], (name, bad[name])
    assert "skipped 5 bad files" in caplog.text
    assert "empty_class" in caplog.text
    assert data.class_names == ["cat", "dog", "oiseaux_été"]      # the empty class is left out
    assert data.num_examples["train"] == 17
    for epoch in range(2):               # full epochs, no error half-way
        images, labels = [], []
        for x, y in data.train.as_numpy_iterator():
            images.append(x)
            labels.append(y)
        images, labels = np.concatenate(images), np.concatenate(labels)
        assert images.shape == (17, 32, 32, 3)
    counts = np.bincount(labels).tolist()
    assert counts == [6, 6, 5]


def test_converted_images_match_their_source(messy):
    data = load_data(str(messy), batch_size=32, val_split=0.0)
    x, y = next(iter(data.dataset("train")))
    birds = np.asarray(x)[np.asarray(y) == 2]
    files = [Path(f).name for f, label in zip(data.splits["train"].files,
                                              data.splits["train"].labels) if label == 2]
    picture = Image.open(CIFAR10_TRAIN / "bird" / "0000.jpg")
    reference = np.asarray(picture.convert("RGB"), dtype=int)
    palette_reference = np.asarray(picture.convert("P").convert("RGB"), dtype=int)
    assert sorted(files) == ["alpha.png", "anim.gif", "cmyk.jpg", "gris_ü.png", "palette.bmp"]
    for name, image in zip(files, birds.astype(int)):
        if name.startswith("gris"):
            np.testing.assert_array_equal(image[..., 0], image[..., 2])
            np.testing.assert_array_equal(image[..., 0],
                                          np.asarray(picture.convert("L"), dtype=int))
        elif name in ("anim.gif", "palette.bmp"):
            np.testing.assert_array_equal(image, palette_reference)
        elif name == "alpha.png":
            np.testing.assert_array_equal(image, reference)
        else:                                       # CMYK, re-encoded as JPEG: close
            assert np.abs(image - reference).mean() < 6, name


def test_strict_refuses_and_names_the_bad_files(messy):
    with pytest.raises(ValueError, match="strict") as raised:
        load_data(str(messy), strict=True)
    message = str(raised.value)
    assert "truncated.jpg" in message and "zero.jpg" in message and "6 bad" in message


def test_a_file_broken_after_the_scan_does_not_end_the_epoch(tmp_path):
    root = cifar_subset(tmp_path / "d", per_class=5, classes=["cat", "dog"])
    victim = root / "dog" / "0002.jpg"
    real = victim.resolve().read_bytes()
    data = load_data(str(root), batch_size=4, val_split=0.0, cache=False)
    victim.unlink()
    victim.write_bytes(real[:40])
    labels = np.concatenate([y for _, y in data.train.as_numpy_iterator()])
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 4


def test_missing_path_and_folder_without_images_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data not found"):
        load_data(str(tmp_path / "nowhere"))
    (tmp_path / "classes" / "a").mkdir(parents=True)
    (tmp_path / "classes" / "a" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no images found"):
        load_data(str(tmp_path / "classes"))
    with pytest.raises(ValueError, match="unknown augmentation"):
        load_data("shapes:train=12,val=0", augment="cifar+sparkles")


def test_one_class_folder_loads_with_a_warning(tmp_path, caplog):
    root = cifar_subset(tmp_path / "one", per_class=4, classes=["ship"])
    with caplog.at_level(logging.WARNING, logger="keras_resnet.data"):
        data = load_data(str(root), batch_size=2, val_split=0.0)
    assert data.class_names == ["ship"] and data.num_examples["train"] == 4
    assert "only one class" in caplog.text


def test_check_data_reports_classes_counts_sizes_and_bad_files(messy):
    report = check_data(str(messy), val_split=0.2)
    assert report["classes"] == ["cat", "dog", "oiseaux_été"]
    assert report["counts"] == {"cat": 6, "dog": 6, "oiseaux_été": 5}
    assert report["num_images"] == 17
    assert report["image_sizes"] == {"32x32": 17}
    assert report["splits"]["val"]["counts"] == {"cat": 1, "dog": 1, "oiseaux_été": 1}
    assert {Path(b["path"]).name for b in report["bad_files"]} == {
        Path(name).name for name in EXPECTED_BAD}
    assert report["empty_classes"] == ["empty_class"]


def test_cli_data_check_json_text_strict_and_missing(messy, cifar_heldout):
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "check", str(messy), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"classes", "counts", "num_images", "bad_files"} <= set(report)
    assert report["num_images"] == 17 and len(report["bad_files"]) == 5
    assert all({"path", "reason"} == set(item) for item in report["bad_files"])

    text = runner.invoke(cli, ["data", "check", str(cifar_heldout)])
    assert text.exit_code == 0
    assert "bad files: 0" in text.stdout and "airplane" in text.stdout
    assert "total" in text.stdout and "100" in text.stdout

    strict = runner.invoke(cli, ["data", "check", str(messy), "--strict"])
    assert strict.exit_code == 2
    assert "Error:" in strict.stderr and "truncated.jpg" in strict.stderr
    missing = runner.invoke(cli, ["data", "check", str(messy / "nope")])
    assert missing.exit_code == 2 and "data not found" in missing.stderr


def test_threaded_scan_agrees_with_the_sequential_scan(messy, monkeypatch):
    from keras_resnet.data import sources

    files = sorted(p for p in messy.rglob("*") if p.is_file()) * 8      # over the 64 threshold
    sequential = sources.scan_files(files)
    monkeypatch.setattr(sources, "THREADED_SCAN_MIN_BYTES", 0)
    threaded = sources.scan_files(files)
    assert [(r.ok, r.reason, r.size) for r in threaded] == [
        (r.ok, r.reason, r.size) for r in sequential]
    assert sum(not r.ok for r in sequential) == 8 * 6     # five bad files and .DS_Store
