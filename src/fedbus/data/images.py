"""Image folders: one subfolder per class, every image a flat row of pixels in 0..1.

``data.dataset = "images"`` reads a folder laid out as torchvision's ``ImageFolder`` expects::

    path/
        cat/ 001.png 002.jpg ...
        dog/ 001.png ...

The class names, sorted, give the label ids (``cat`` is 0, ``dog`` 1). Every image is read with
Pillow (PNG, JPEG, BMP, the first frame of a GIF, and WebP where Pillow was built with it),
resized to ``image_size`` x ``image_size`` pixels, made grey (one channel) or RGB (three), scaled
to 0..1 (a 16-bit grey PNG from 0..65535) and flattened channel by channel (``channel, row,
column``, as torch lays images out).
Files with other suffixes are skipped, and a log line says how many. No torch is needed; the
``cnn`` model reads the grey square images this gives (``data.grayscale = true``).

``image_row`` and ``open_image`` turn one image into a row; the Hugging Face loader
(``fedbus.data.huggingface``) uses them for image columns, and ``check_matrix_size`` for its
memory bound.

Examples
--------
>>> import pathlib, tempfile
>>> from PIL import Image
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for name, shade in (("dark", 0), ("light", 255)):
...     (root / name).mkdir()
...     Image.new("L", (8, 8), shade).save(root / name / "a.png")
>>> data = load_image_folder(root, image_size=4)
>>> data.x.shape, data.y.tolist(), data.x.max(axis=1).tolist()
((2, 16), [0, 1], [0.0, 1.0])
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError
from PIL import features as pillow_features

from fedbus.data.base import FederatedDataset
from fedbus.data.datasets import ArrayDataset
from fedbus.data.federated import PartitionedDataset
from fedbus.data.registry import partition_options, register_dataset
from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.plugins import Settings

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_FEATURE_BYTES",
    "check_matrix_size",
    "image_row",
    "load_image_folder",
    "open_image",
]

logger = logging.getLogger(__name__)

#: Suffixes read as images (lower case); WebP only where Pillow can decode it.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
    | ({".webp"} if pillow_features.check("webp") else set())
)

# Grey modes of more than 8 bits (16-bit PNGs): converting them to L clips at 255, not scales.
_WIDE_GREY = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})

#: Largest feature matrix a loader builds in memory: 8 GiB of float32 (2**31 values), e.g.
#: 2.7 million 28x28 grey images or 700,000 RGB images of 32x32.
MAX_FEATURE_BYTES = 8 * 2**30


def check_matrix_size(rows: int, features: int, source: str, *, limit: int | None = None) -> None:
    """Refuse a ``rows`` x ``features`` float32 matrix larger than ``limit`` bytes.

    ``limit`` defaults to ``MAX_FEATURE_BYTES``; ``source`` names the data in the message.

    Examples
    --------
    >>> check_matrix_size(1000, 784, "mnist")
    >>> check_matrix_size(10, 100, "tiny", limit=1000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fedbus.errors.InvalidArgumentError: tiny: 10 rows x 100 features of float32 take 4,000 bytes...
    """
    limit = MAX_FEATURE_BYTES if limit is None else limit
    size = rows * features * 4
    if size > limit:
        raise InvalidArgumentError(
            f"{source}: {rows:,} rows x {features:,} features of float32 take {size:,} bytes, "
            f"more than the {limit:,} bytes fedbus holds in memory; use fewer rows, fewer "
            "feature columns or a smaller data.image_size"
        )


def image_row(image: Image.Image, size: int, grayscale: bool) -> NDArray[np.float32]:
    """``image`` resized to ``size`` x ``size``, grey or RGB, in 0..1, flattened channel-first.

    Examples
    --------
    >>> from PIL import Image
    >>> row = image_row(Image.new("RGB", (3, 5), (255, 0, 51)), size=2, grayscale=False)
    >>> (row * 255).round().astype(int).tolist()  # red, green, blue planes of 2 x 2 pixels
    [255, 255, 255, 255, 0, 0, 0, 0, 51, 51, 51, 51]
    """
    if image.mode in _WIDE_GREY:
        return _wide_grey_row(image, size, grayscale)
    # convert first: palette, alpha and 1-bit images resize correctly only as L or RGB.
    converted = image.convert("L" if grayscale else "RGB")
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(converted, dtype=np.float32) / 255.0
    if not grayscale:
        pixels = pixels.transpose(2, 0, 1)  # rows, columns, channels -> channels first
    return pixels.reshape(-1)


def _wide_grey_row(image: Image.Image, size: int, grayscale: bool) -> NDArray[np.float32]:
    """``image_row`` of a 16-bit grey image, scaled from 0..65535 (Pillow's L would clip)."""
    scaled = np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)
    plane = Image.fromarray(scaled)  # mode F: resized as floats, nothing rounded
    if plane.size != (size, size):
        plane = plane.resize((size, size), Image.Resampling.BILINEAR)
    grey = np.asarray(plane, dtype=np.float32).reshape(-1)
    return grey if grayscale else np.tile(grey, 3)  # RGB of grey: three equal planes


def open_image(
    source: str | os.PathLike[str] | bytes, size: int, grayscale: bool, name: str
) -> NDArray[np.float32]:
    """Decode one image file (a path or its bytes) into ``image_row``'s row.

    Pillow's decompression-bomb guard applies: an image of more than ``Image.MAX_IMAGE_PIXELS``
    pixels is refused rather than decoded.

    Raises
    ------
    InvalidArgumentError
        Pillow cannot read it; ``name`` says which image it was.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit: refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as image:
                image.load()
                return image_row(image, size, grayscale)
    except (
        OSError,
        ValueError,
        SyntaxError,
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise InvalidArgumentError(
            f"{name}: Pillow cannot read this image ({exc}); replace or remove it"
        ) from exc


def load_image_folder(
    path: str | os.PathLike[str],
    image_size: int = 28,
    grayscale: bool = True,
    *,
    max_bytes: int | None = None,
) -> ArrayDataset:
    """Read a folder of class subfolders into an ``ArrayDataset``.

    Parameters
    ----------
    path
        The folder; each subfolder (searched recursively) holds one class's images.
    image_size
        Side in pixels every image is resized to.
    grayscale
        One grey channel (``image_size**2`` features) or three RGB channels (three times as
        many).
    max_bytes
        Bound of the feature matrix; ``MAX_FEATURE_BYTES`` when not given.

    Raises
    ------
    InvalidArgumentError
        ``path`` is not a folder, has fewer than two class subfolders, a class has no image, an
        image cannot be read, or the images would take more than ``max_bytes``.
    """
    root = Path(path)
    if not root.is_dir():
        found = "a file" if root.exists() else "missing"
        raise InvalidArgumentError(
            f"{os.fspath(path)}: expected a folder with one subfolder of images per class, "
            f"got {found}"
        )
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if len(classes) < 2:
        raise InvalidArgumentError(
            f"{os.fspath(path)}: expected one subfolder of images per class, at least 2, found "
            f"{len(classes)} ({classes}); put each class's images in a folder named after it"
        )
    files, labels, skipped = _list_images(root, classes)
    channels = 1 if grayscale else 3
    width = image_size * image_size * channels
    check_matrix_size(len(files), width, os.fspath(path), limit=max_bytes)
    if skipped:
        logger.info("%s: skipped %d files that are not images", os.fspath(path), skipped)
    x = np.empty((len(files), width), dtype=np.float32)
    for row, file in enumerate(files):
        x[row] = open_image(file, image_size, grayscale, os.fspath(file))
    return ArrayDataset(x, np.asarray(labels, dtype=np.int64), max(2, len(classes)))


def _list_images(root: Path, classes: list[str]) -> tuple[list[Path], list[int], int]:
    """Every image of every class, in sorted order, their labels, and how many files were not."""
    files: list[Path] = []
    labels: list[int] = []
    skipped = sum(1 for entry in root.iterdir() if not entry.is_dir())
    for label, name in enumerate(classes):
        found = 0
        for folder, subfolders, names in os.walk(root / name):
            subfolders.sort()  # os.walk visits them in this order: the same on every machine
            for file_name in sorted(names):
                file = Path(folder) / file_name
                if file.suffix.lower() in IMAGE_SUFFIXES and not file_name.startswith("."):
                    files.append(file)
                    labels.append(label)
                    found += 1
                else:
                    skipped += 1
        if not found:
            raise InvalidArgumentError(
                f"{root / name}: class folder {name!r} holds no image (expected files ending "
                f"in {', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove the folder"
            )
    return files, labels, skipped


def _build(settings: Settings) -> FederatedDataset:
    """``data.dataset = "images"``: the folder at ``data.path`` split by ``data.partition``."""
    try:
        dataset = load_image_folder(
            settings["data.path"], settings["data.image_size"], settings["data.grayscale"]
        )
    except InvalidArgumentError as exc:
        raise ConfigError(f"data.path: {exc}") from exc
    return PartitionedDataset.from_arrays(
        dataset, settings["federation.num_clients"], **partition_options(settings)
    )


register_dataset("images", _build, reads_file=True)
