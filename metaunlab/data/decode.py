"""Image decoding shared by every loader, so training and `evaluate` see identical pixels."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from metaunlab.data.errors import DataError, looks_like_html

_DECODE_THREADS = min(8, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class ImageFormat:
    """How files become the uint8 arrays a model was trained on.

    `invert` turns dark-on-white drawings (Omniglot) into bright strokes on black, so the
    strokes are the foreground a ReLU network responds to.
    """

    channels: int = 3
    image_size: int | None = None
    resample: str = "bilinear"  # or "lanczos", or "box" (area averaging, for downscaling)
    invert: bool = False

    @property
    def mode(self) -> str:
        if self.channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {self.channels}.")
        return "L" if self.channels == 1 else "RGB"


_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS,
             "box": Image.Resampling.BOX}


def decode_image(data: bytes, source: str, fmt: ImageFormat) -> np.ndarray:
    """uint8 (H, W, C) pixels of one encoded image; `source` names it in errors."""
    if looks_like_html(data[:512]):
        raise DataError(f"{source} is an HTML page, not an image (an error page was saved in "
                        "its place); download the data set again.")
    try:
        with Image.open(io.BytesIO(data)) as image:
            converted = image.convert(fmt.mode)
        size = fmt.image_size
        if size is not None and converted.size != (size, size):
            converted = converted.resize((size, size), _RESAMPLE[fmt.resample])
        pixels = np.asarray(converted, dtype=np.uint8)
    except Image.UnidentifiedImageError:  # its message shows the in-memory buffer, not the file
        raise DataError(f"{source} is not a readable image (no image format recognised); "
                        "replace it or download the data set again.") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"{source} is not a readable image ({error}); replace it or download "
                        "the data set again.") from error
    if fmt.invert:
        pixels = 255 - pixels
    return pixels.reshape(pixels.shape[:2] + (fmt.channels,))


def load_image_files(paths: Sequence[str | os.PathLike], fmt: ImageFormat) -> list[np.ndarray]:
    """Decode files in parallel threads (PIL releases the GIL while decoding)."""
    def one(path):
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise DataError(f"cannot read {path} ({error.strerror}); check the path.") from error
        return decode_image(data, str(path), fmt)

    with ThreadPoolExecutor(_DECODE_THREADS) as pool:
        return list(pool.map(one, paths))


def resize_images(images: np.ndarray, image_size: int, resample: str = "bilinear") -> np.ndarray:
    """uint8 (N, H, W, C) images resized to ``image_size`` x ``image_size`` (a copy).

    For arrays that were stored decoded (pickle caches, npz files) and are wanted at
    another size, e.g. small images for a quick run.
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}.")
    channels = images.shape[3]
    if channels not in (1, 3):
        raise DataError(f"images have {channels} channels; only 1 (greyscale) or 3 (RGB) "
                        "can be resized.")

    def one(pixels):
        # A 2-D uint8 array becomes an "L" image, an (H, W, 3) one an "RGB" image.
        image = Image.fromarray(np.ascontiguousarray(
            pixels.reshape(pixels.shape[:2]) if channels == 1 else pixels))
        image = image.resize((image_size, image_size), _RESAMPLE[resample])
        return np.asarray(image, dtype=np.uint8).reshape(image_size, image_size, channels)

    out = np.empty((len(images), image_size, image_size, channels), np.uint8)
    with ThreadPoolExecutor(_DECODE_THREADS) as pool:
        for i, resized in enumerate(pool.map(one, images)):
            out[i] = resized
    return out
