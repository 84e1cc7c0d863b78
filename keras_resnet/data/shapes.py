"""``shapes``: a built-in, procedurally generated image-classification dataset.

Geometric shapes with random colour, size, position and rotation on textured backgrounds
(noisy solid colour, gradients, stripes, checkerboards), drawn with NumPy in a few vectorised
passes. The same options and seed always give the same pixels, so training runs end to end
offline and reproducibly; the classes are different enough that a small ResNet learns them in
a minute on a CPU, and varied enough that it has to learn shape rather than colour.

Spec string: ``shapes`` or ``shapes:classes=6,train=3000,val=600,test=0,size=32,seed=0``.
"""
from __future__ import annotations

import functools

import numpy as np

SHAPE_NAMES = ("circle", "square", "triangle", "cross", "ring", "star", "bar", "semicircle")
DEFAULTS = {"classes": 6, "train": 3000, "val": 600, "test": 0, "size": 32, "seed": 0}
SPLITS = ("train", "val", "test")
_SUPERSAMPLE = 2      # draw at 2x and average: anti-aliased edges
_CHUNK = 512          # images drawn per vectorised pass (bounds memory)


def parse_shapes_spec(spec: str) -> dict:
    """``"shapes:classes=4,train=500"`` -> a full option dict; ``ValueError`` on bad input."""
    name, _, options = spec.partition(":")
    if name.strip().lower() != "shapes":
        raise ValueError(f"not a shapes spec: {spec!r}")
    params = dict(DEFAULTS)
    for item in filter(None, (part.strip() for part in options.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in DEFAULTS:
            raise ValueError(f"bad shapes option {item!r}: expected key=value with key in "
                             f"{', '.join(DEFAULTS)}")
        try:
            params[key] = int(value)
        except ValueError:
            raise ValueError(f"bad shapes option {item!r}: {key} must be an integer") from None
    if not 2 <= params["classes"] <= len(SHAPE_NAMES):
        raise ValueError(f"shapes: classes must be between 2 and {len(SHAPE_NAMES)}, "
                         f"got {params['classes']}")
    if params["size"] < 8:
        raise ValueError(f"shapes: size must be at least 8, got {params['size']}")
    if params["train"] < params["classes"]:
        raise ValueError(f"shapes: train must be at least classes ({params['classes']}), "
                         f"got {params['train']}")
    if params["val"] < 0 or params["test"] < 0:
        raise ValueError("shapes: val and test must not be negative")
    return params


def shapes_class_names(classes: int) -> list[str]:
    return list(SHAPE_NAMES[:classes])


@functools.lru_cache(maxsize=8)
def _generate_cached(classes, count, size, seed, split_index):
    rng = np.random.default_rng([seed, split_index])
    labels = np.arange(count) % classes
    rng.shuffle(labels)
    images = np.empty((count, size, size, 3), np.uint8)
    for start in range(0, count, _CHUNK):
        stop = min(start + _CHUNK, count)
        images[start:stop] = _draw(labels[start:stop], size, rng)
    images.setflags(write=False)
    labels = labels.astype(np.int32)
    labels.setflags(write=False)
    return images, labels


def generate_shapes(split: str = "train", classes: int = 6, count: int = 3000, size: int = 32,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (count, size, size, 3), labels int32 (count,))`` for one split.

    Each split has its own random stream, so changing ``train`` never changes ``val``. Classes
    are balanced (count // classes each, the remainder to the first classes).
    """
    images, labels = _generate_cached(classes, count, size, seed, SPLITS.index(split))
    return images.copy(), labels.copy()


def _shape_mask(name, u, v, r, theta, radius):
    """Inside-mask of shape ``name`` in rotated, centred coordinates: (n, s, s) bool."""
    pi = np.pi
    a = np.abs(u)
    b = np.abs(v)

    def polygon(k):
        gamma = np.mod(theta, 2 * pi / k) - pi / k
        return r * np.cos(gamma) <= radius * np.cos(pi / k)

    def star(points=5, inner=0.45):
        # Fold the angle into one half-spike: delta = 0 on a tip, pi/points on an inner vertex;
        # inside when on the centre's side of the edge from tip to inner vertex.
        half = pi / points
        delta = half - np.abs(np.mod(theta, 2 * half) - half)
        x, y = r * np.cos(delta), r * np.sin(delta)
        in_x, in_y = radius * inner * np.cos(half), radius * inner * np.sin(half)
        dx, dy = in_x - radius, in_y
        side = dx * y - dy * (x - radius)
        centre_side = dy * radius
        return side * centre_side >= 0

    builders = {
        "circle": lambda: r <= radius,
        "square": lambda: np.maximum(a, b) <= radius * 0.8,
        "triangle": lambda: polygon(3),
        "cross": lambda: (((a <= radius * 0.28) & (b <= radius))
                          | ((b <= radius * 0.28) & (a <= radius))),
        "ring": lambda: (r <= radius) & (r >= radius * 0.58),
        "star": lambda: star(),
        "bar": lambda: (a <= radius) & (b <= radius * 0.3),
        "semicircle": lambda: (r <= radius) & (v >= -radius * 0.1),
    }
    return builders[name]()


def _shape_masks(labels, u, v, r, theta, radius):
    """Each image's own shape mask, drawn class by class on the rows of that class."""
    masks = np.zeros(u.shape, bool)
    for index in np.unique(labels):
        rows = labels == index
        masks[rows] = _shape_mask(SHAPE_NAMES[index], u[rows], v[rows], r[rows], theta[rows],
                                  radius[rows])
    return masks


def _draw(labels, size, rng):
    n = len(labels)
    big = size * _SUPERSAMPLE
    grid = (np.arange(big, dtype=np.float32) + 0.5) / big            # pixel centres in [0, 1]
    gy, gx = grid[None, :, None], grid[None, None, :]

    def per_image(values):
        return np.asarray(values, np.float32)[:, None, None]

    radius = per_image(rng.uniform(0.2, 0.4, n))
    cx = per_image(rng.uniform(0.0, 1.0, n)) * (1 - 2 * radius) + radius
    cy = per_image(rng.uniform(0.0, 1.0, n)) * (1 - 2 * radius) + radius
    angle = per_image(rng.uniform(0, 2 * np.pi, n))
    dx, dy = gx - cx, gy - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    r = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    mask = _shape_masks(labels, u, v, r, theta, radius).astype(np.float32)
    alpha = mask.reshape(n, size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(2, 4))[..., None]

    # Textured backgrounds: blend two colours with one of four patterns.
    g = (np.arange(size, dtype=np.float32) + 0.5) / size
    py, px = g[None, :, None], g[None, None, :]
    direction = per_image(rng.uniform(0, 2 * np.pi, n))
    along = px * np.cos(direction) + py * np.sin(direction)
    frequency = per_image(rng.uniform(2.0, 6.0, n))
    patterns = np.stack([
        np.zeros((n, size, size), np.float32),                         # solid (plus noise)
        np.clip(along * 0.7 + 0.15, 0, 1) + np.zeros((n, size, size), np.float32),   # gradient
        (np.sin(2 * np.pi * frequency * along) > 0).astype(np.float32),               # stripes
        ((np.floor(px * frequency) + np.floor(py * frequency)) % 2).astype(np.float32),  # checks
    ], axis=1)
    kind = rng.integers(0, 4, n)
    pattern = patterns[np.arange(n), kind][..., None]
    colour_a = rng.uniform(0, 1, (n, 1, 1, 3)).astype(np.float32)
    colour_b = np.clip(colour_a + rng.uniform(-0.3, 0.3, (n, 1, 1, 3)), 0, 1).astype(np.float32)
    background = colour_a * (1 - pattern) + colour_b * pattern

    # The shape colour keeps a visible contrast with the background's mean colour.
    fill = rng.uniform(0, 1, (n, 1, 1, 3)).astype(np.float32)
    mean_bg = background.mean(axis=(1, 2), keepdims=True)
    low_contrast = np.abs(fill - mean_bg).max(axis=-1, keepdims=True) < 0.35
    fill = np.where(low_contrast, np.mod(mean_bg + 0.5, 1.0), fill)

    image = background * (1 - alpha) + fill * alpha
    image += rng.normal(0, 0.03, image.shape).astype(np.float32)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
