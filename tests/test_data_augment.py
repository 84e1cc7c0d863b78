"""Augmentation presets, MixUp/CutMix labels, and resolution handling."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from keras_resnet.data import load_data, parse_augment, read_image


def _first_batch(dataset):
    x, y = next(iter(dataset))
    return np.asarray(x), np.asarray(y)


def test_parse_augment_presets_and_switches():
    assert parse_augment(None).switches == ()
    assert parse_augment("none").switches == ()
    assert parse_augment("cifar").switches == ("crop", "flip")
    assert parse_augment("imagenet").switches == ("rrc", "flip", "jitter")
    assert parse_augment("erasing+cifar+randaugment").switches == (
        "crop", "flip", "randaugment", "erasing")
    assert str(parse_augment("flip+flip")) == "flip"
    assert parse_augment("cutout+cifar").switches == ("crop", "flip", "cutout")
    assert parse_augment("cifar+reflect").switches == ("reflect", "flip")   # replaces crop
    with pytest.raises(ValueError, match="unknown augmentation 'blur'"):
        parse_augment("cifar+blur")


def test_cifar_preset_shifts_and_flips_per_image(cifar_small):
    data = load_data(str(cifar_small), batch_size=64, augment="cifar", val_split=0.0, seed=3)
    plain, _ = _first_batch(data.dataset("train"))
    x, y = _first_batch(data.train)
    assert x.shape == (64, 32, 32, 3) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 255 and x.max() > 200
    # Each augmented image is its source shifted by at most 4 px (zero fill) and maybe flipped:
    # find the source among the un-augmented images and check the overlap is exact.
    files = dict(zip(data.splits["train"].files, range(len(data.splits["train"].files))))
    originals = np.concatenate([b for b, _ in data.dataset("train").as_numpy_iterator()])
    shifts = set()
    for image in x[:8]:
        found = False
        for flip in (False, True):
            candidate = image[:, ::-1] if flip else image
            for dy in range(-4, 5):
                for dx in range(-4, 5):
                    region = candidate[max(dy, 0):32 + min(dy, 0), max(dx, 0):32 + min(dx, 0)]
                    source = originals[:, max(-dy, 0):32 + min(-dy, 0),
                                       max(-dx, 0):32 + min(-dx, 0)]
                    if np.any(np.all(source == region, axis=(1, 2, 3))):
                        found = True
                        shifts.add((dy, dx, flip))
                        break
                if found:
                    break
            if found:
                break
        assert found
    assert len(shifts) > 2            # per-image shifts, not one per batch
    assert len(files) == 200 and plain.dtype == np.uint8


def test_heavy_presets_run_and_keep_the_contract(cifar_small):
    data = load_data(str(cifar_small), batch_size=16, augment="cifar+randaugment+erasing",
                     val_split=0.1)
    x, y = _first_batch(data.train)
    assert x.shape == (16, 32, 32, 3) and y.shape == (16,) and y.dtype == np.int32
    assert 0 <= x.min() and x.max() <= 255
    vx, _ = _first_batch(data.val)
    assert vx.dtype == np.uint8                       # eval is never augmented
    imagenet = load_data(str(cifar_small), batch_size=16, augment="imagenet", val_split=0.0)
    ix, _ = _first_batch(imagenet.train)
    assert ix.shape == (16, 32, 32, 3) and 0 <= ix.min() and ix.max() <= 255


def _augment_random_images(augment, count, *, seed, lowest=0, crop_padding=None):
    """``(images, augmented)`` for ``count`` random 32x32 uint8 images with pixels in
    ``lowest``-255, through the batch augmenter of ``augment``."""
    import tensorflow as tf

    from keras_resnet.data.augment import build_batch_augmenter

    augmenter = build_batch_augmenter(parse_augment(augment, crop_padding), (32, 32, 3),
                                      seed=seed)
    images = np.random.RandomState(seed).randint(lowest, 256, (count, 32, 32, 3))
    images = images.astype(np.uint8)
    return images, np.asarray(augmenter(tf.constant(images)))


def test_cutout_greys_one_square_per_image_at_varying_places():
    from keras_resnet.data.augment import cutout_fill

    images, out = _augment_random_images("cutout", 64, seed=1)
    corners = set()
    for source, image in zip(images, out):
        grey = np.all(image == np.float32(cutout_fill()), axis=-1)
        rows, cols = np.nonzero(grey)
        assert grey.sum() == 64                                  # an 8x8 square in every image
        assert np.ptp(rows) == 7 and np.ptp(cols) == 7
        np.testing.assert_array_equal(image[~grey], source[~grey])   # the rest untouched
        corners.add((rows.min(), cols.min()))
    assert len(corners) > 32                                     # placed per image


def _reflect_shifts(images, out, reach):
    """The (dy, dx) shift of each augmented image, searched within ``reach`` pixels."""
    shifts = []
    for source, image in zip(images, out):
        assert image.min() > 0                                   # no black fill anywhere
        # Keras's "reflect" repeats the edge pixel (d c b a | a b c d), numpy's "symmetric".
        padded = np.pad(source, ((reach, reach), (reach, reach), (0, 0)),
                        mode="symmetric").astype(np.float32)
        found = [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)
                 if np.array_equal(padded[reach + dy:32 + reach + dy,
                                          reach + dx:32 + reach + dx], image)]
        assert len(found) == 1, "not an exact shifted copy of its source"
        shifts.append(found[0])
    return shifts


def test_reflect_shifts_each_image_with_a_mirrored_border():
    images, out = _augment_random_images("reflect", 32, seed=2, lowest=1)
    shifts = _reflect_shifts(images, out, reach=4)
    assert len(set(shifts)) > 8                                  # drawn per image


def test_crop_padding_sets_how_far_the_crop_shifts():
    images, out = _augment_random_images("reflect", 64, seed=4, lowest=1, crop_padding=2)
    # Searched within 4 pixels, every shift lies within 2, and both extremes occur.
    shifts = _reflect_shifts(images, out, reach=4)
    assert max(max(abs(dy), abs(dx)) for dy, dx in shifts) == 2
    assert len(set(shifts)) > 8
    with pytest.raises(ValueError, match="crop_padding must be at least 1"):
        parse_augment("cifar", crop_padding=0)
    assert parse_augment("cifar", crop_padding=2).crop_padding == 2


@pytest.mark.parametrize("mixup,cutmix", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixup_and_cutmix_give_soft_one_hot_labels(mixup, cutmix):
    data = load_data("shapes:classes=4,train=64,val=16", batch_size=32, augment="flip",
                     mixup=mixup, cutmix=cutmix)
    seen_soft = False
    for x, y in data.train.as_numpy_iterator():
        assert x.shape == (32, 32, 32, 3) and y.shape == (32, 4) and y.dtype == np.float32
        np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
        seen_soft |= bool(np.any((y > 0.01) & (y < 0.99)))
    assert seen_soft
    vx, vy = _first_batch(data.val)
    assert vy.shape == (16, 4) and set(np.unique(vy)) <= {0.0, 1.0}   # eval: plain one-hot
    _, int_labels = _first_batch(data.dataset("train"))
    assert int_labels.dtype == np.int32 and int_labels.ndim == 1


@pytest.fixture(scope="module")
def large_images(tmp_path_factory):
    """48x64 images: a 46x56 centre of one colour on a border of another; plus a 40x40."""
    root = tmp_path_factory.mktemp("large")
    for k, name in enumerate(["red", "blue"]):
        (root / name).mkdir()
        for i in range(3):
            image = np.zeros((48, 64, 3), np.uint8)
            image[:] = (0, 255, 0)
            image[1:47, 4:60] = (200, 30, 30) if k == 0 else (30, 30, 200)
            Image.fromarray(image).save(root / name / f"{i}.png")
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(root / "blue" / "square.png")
    return root


def test_larger_images_are_resized_then_centre_cropped_for_eval(large_images):
    data = load_data(str(large_images), image_size=32, batch_size=8, val_split=0.0)
    assert data.image_shape == (32, 32, 3)
    x, y = _first_batch(data.dataset("train"))
    assert x.shape == (7, 32, 32, 3) and x.dtype == np.uint8
    # The centre crop keeps 87.5% of the shorter side: the green border is cropped away.
    names = [p.replace("\\", "/").split("/")[-2:] for p in data.splits["train"].files]
    assert data.class_names == ["blue", "red"]
    for image, (folder, name) in zip(x, names):
        if name == "square.png":           # 40x40: scaled to 32x32, nothing cropped
            np.testing.assert_array_equal(image, np.full((32, 32, 3), 90))
            continue
        expected = (200, 30, 30) if folder == "red" else (30, 30, 200)
        assert np.abs(image.astype(int) - expected).max() <= 2
    one = read_image(large_images / "blue" / "0.png", image_size=32)
    np.testing.assert_array_equal(one, x[0])         # prediction sees what evaluation sees


def test_larger_images_get_a_random_resized_crop_for_training(large_images):
    data = load_data(str(large_images), image_size=(24, 32), batch_size=8, augment="flip",
                     val_split=0.0, seed=1)
    assert data.image_shape == (24, 32, 3)
    epochs = [_first_batch(data.train)[0] for _ in range(2)]
    assert epochs[0].shape == (7, 24, 32, 3)
    green = [np.mean(np.all(np.abs(e - (0, 255, 0)) < 40, axis=-1)) for e in epochs]
    assert max(green) > 0       # crops from the whole image reach the border sometimes
    assert not np.array_equal(epochs[0], epochs[1])


def test_mixed_sizes_default_to_the_median_shorter_side(large_images):
    data = load_data(str(large_images), batch_size=8, val_split=0.0)
    assert data.image_shape == (48, 48, 3)


def test_small_images_pass_unchanged_when_no_size_is_given(cifar_small):
    data = load_data(str(cifar_small), batch_size=4, val_split=0.0)
    assert data.image_shape == (32, 32, 3)
    x, _ = _first_batch(data.dataset("train"))
    np.testing.assert_array_equal(x[0], read_image(data.splits["train"].files[0]))
    bigger = load_data(str(cifar_small), batch_size=4, val_split=0.0, image_size=64)
    bx, _ = _first_batch(bigger.dataset("train"))
    assert bx.shape == (4, 64, 64, 3)


def test_every_whole_pixel_shift_is_equally_likely():
    """As pad-and-crop (torchvision's ``RandomCrop(padding=2)``, airbench's crop): each of the
    5 shifts from -2 to +2 on each axis about 1/5 of the time, the extremes included."""
    import tensorflow as tf

    from keras_resnet.data.augment import build_batch_augmenter

    augmenter = build_batch_augmenter(parse_augment("crop", 2), (32, 32, 3), seed=5)
    dots = np.zeros((2000, 32, 32, 3), np.uint8)
    dots[:, 16, 16] = 255                       # one lit pixel, far from every border
    out = np.asarray(augmenter(tf.constant(dots)))[..., 0]
    _, rows, cols = np.nonzero(out == 255)
    assert len(rows) == 2000                    # the dot is moved, never lost or doubled
    for moved in (rows - 16, cols - 16):
        counts = np.bincount(moved + 2, minlength=5)
        assert len(counts) == 5                 # never beyond 2 pixels
        # 1/5 is 400 of 2000; a pixel-wide sliver (the old extremes) would give about 250.
        assert counts.min() > 330 and counts.max() < 470, counts


def test_alternating_flip_mirrors_each_image_in_every_other_pass(cifar_small):
    """airbench's derandomised flip: a fixed random half of the images mirrored in even
    epochs, exactly the other half in odd ones; ``train`` holds one even and one odd pass."""
    from keras_resnet.data.augment import parse_augment as parse

    assert parse("flip+altflip+reflect").switches == ("reflect", "altflip")  # replaces flip
    data = load_data(str(cifar_small), batch_size=50, augment="altflip", val_split=0.0,
                     seed=7)
    assert data.train_passes == 2
    originals = {o.tobytes(): i for i, o in enumerate(data.numpy("train")[0])}
    mirrors = {o[:, ::-1].tobytes(): i for i, o in enumerate(data.numpy("train")[0])}
    batches = [np.asarray(x).astype(np.uint8) for x, _ in data.train]
    assert len(batches) == 8                     # 200 images, batch 50, two passes
    passes = []
    for half in (batches[:4], batches[4:]):
        mirrored = {}
        for image in np.concatenate(half):
            key = image.tobytes()
            assert key in originals or key in mirrors
            if key in originals:                 # a symmetric image counts as unmirrored
                mirrored[originals[key]] = False
            else:
                mirrored[mirrors[key]] = True
        assert len(mirrored) == 200              # each image once per pass
        passes.append(mirrored)
    even, odd = passes
    assert 60 < sum(even.values()) < 140        # a random half, not all or none
    assert all(even[i] != odd[i] for i in even)  # the other half next epoch
    # The same images are mirrored in the next even pass (the pairing is fixed for the run),
    # in a new order; a run resuming at an odd epoch starts with the odd pass.
    def unmirrored(dataset):
        images = np.concatenate([np.asarray(x).astype(np.uint8) for x, _ in dataset.take(4)])
        return {originals[i.tobytes()] for i in images if i.tobytes() in originals}

    again = data.train.take(4)
    assert unmirrored(again) == {i for i, m in even.items() if not m}
    order = [originals.get(i.tobytes()) for i in np.concatenate(batches[:4])]
    assert [originals.get(i.tobytes()) for i in
            np.concatenate([np.asarray(x).astype(np.uint8) for x, _ in again])] != order
    assert unmirrored(data.train_from_epoch(3)) == {i for i, m in odd.items() if not m}
    assert unmirrored(data.train_from_epoch(4)) == {i for i, m in even.items() if not m}


@pytest.mark.parametrize("fill_mode", ["constant", "reflect"])
def test_shift_gather_gives_keras_translation_pixels(fill_mode):
    """The hand-written gather reads the pixels Keras's translation (``affine_transform``,
    nearest sampling, which ``RandomTranslation`` uses) produces, for every shift within 3."""
    import keras
    import tensorflow as tf

    from keras_resnet.data.shift_flip import shift_and_flip, source_indices

    images = np.random.RandomState(0).randint(1, 256, (1, 8, 12, 3)).astype(np.float32)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            # Output (i, j) reads input (i + dy, j + dx): a translation by (-dy, -dx).
            expected = keras.ops.image.affine_transform(
                images, np.array([[1, 0, dx, 0, 1, dy, 0, 0]], np.float32),
                interpolation="nearest", fill_mode=fill_mode, fill_value=0.0)
            rows = source_indices(tf.constant([dy]), 8, fill_mode)
            cols = source_indices(tf.constant([dx]), 12, fill_mode)
            out = shift_and_flip(tf.constant(images), rows, cols, fill_mode)
            np.testing.assert_array_equal(np.asarray(out), np.asarray(expected),
                                          err_msg=f"shift ({dy}, {dx})")


def test_random_shift_flip_flips_per_image_and_keeps_its_config():
    import tensorflow as tf

    from keras_resnet.data.shift_flip import RandomShiftFlip

    images = np.random.RandomState(1).randint(0, 256, (200, 6, 10, 3)).astype(np.float32)
    layer = RandomShiftFlip(padding=0, flip=True, seed=3)
    out = np.asarray(layer(tf.constant(images)))
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(m != k for m, k in zip(mirrored, kept))       # each image one or the other
    assert 70 < sum(mirrored) < 130
    again = np.asarray(layer(tf.constant(images)))
    assert not np.array_equal(again, out)                    # a fresh draw every call
    same_seed = np.asarray(RandomShiftFlip(padding=0, flip=True, seed=3)(tf.constant(images)))
    np.testing.assert_array_equal(same_seed, out)            # --seed repeats the run
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
    # Rows and columns shift by their own padding; the config rebuilds the layer.
    rebuilt = RandomShiftFlip.from_config(RandomShiftFlip((1, 3), "reflect").get_config())
    assert rebuilt.padding == (1, 3) and rebuilt.fill_mode == "reflect" and not rebuilt.flip
    dots = np.zeros((500, 9, 9, 3), np.float32)
    dots[:, 4, 4] = 255
    _, rows, cols = np.nonzero(np.asarray(rebuilt(tf.constant(dots)))[..., 0] == 255)
    assert set(rows - 4) == {-1, 0, 1} and set(cols - 4) == {-3, -2, -1, 0, 1, 2, 3}
    with pytest.raises(ValueError, match="fill_mode"):
        RandomShiftFlip(2, fill_mode="wrap")
