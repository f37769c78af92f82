"""Image decoding shared by every loader, so training and `evaluate` see identical pixels."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from absl import logging
from PIL import Image

from metaunlab.data import limits
from metaunlab.data.errors import DataError, looks_like_html
from metaunlab.errors import shown

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
            _check_pixels(image.size, source)  # declared in the header: before decoding
            converted = _over_white(image).convert(fmt.mode)
        size = fmt.image_size
        if size is not None and converted.size != (size, size):
            converted = converted.resize((size, size), _RESAMPLE[fmt.resample])
        pixels = np.asarray(converted, dtype=np.uint8)
    except Image.DecompressionBombError:
        raise DataError(f"{source} declares more than {2 * Image.MAX_IMAGE_PIXELS} pixels, "
                        "which PIL refuses to decode (a decompression bomb, or not an image for "
                        "this library); replace it with a smaller image.") from None
    except DataError:
        raise
    except Image.UnidentifiedImageError:  # its message shows the in-memory buffer, not the file
        raise DataError(f"{source} is not a readable image (no image format recognised); "
                        "replace it or download the data set again.") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{source} is not a readable image ({error}); replace it or download "
                        "the data set again.") from error
    if pixels.size and pixels.min() == pixels.max():
        logging.warning("%s decodes to a blank image (every pixel %d); check that it holds "
                        "the picture meant", shown(source), pixels.flat[0])
    if fmt.invert:
        pixels = 255 - pixels
    return pixels.reshape(pixels.shape[:2] + (fmt.channels,))


def _check_pixels(size: tuple[int, int], source: str) -> None:
    width, height = size
    limit = limits.max_image_pixels()
    if width * height > limit:
        raise DataError(f"{source} declares {width}x{height} pixels, more than the {limit} "
                        "this library decodes (a corrupt or hostile file, or a decompression "
                        "bomb); shrink the image, or if you trust it set "
                        f"{limits.BUDGET_ENV} to 8 bytes per pixel, e.g. "
                        f"{limits.BUDGET_ENV}=64G.")


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of an image file, refused before reading if larger than
    ``limits.max_image_file_bytes()``."""
    return limits.read_file(path, limits.max_image_file_bytes(), "image file")


def _over_white(image: Image.Image) -> Image.Image:
    """`image` composited over a white background when it has an alpha channel or a
    transparent colour (RGBA, LA, PA, P or L with transparency), else `image`.

    Converting drops the alpha channel and keeps the colour under it, which in a drawing on
    a transparent background is often black everywhere: strokes and background alike. Drawn
    characters (Omniglot's) are dark strokes on white paper, which is what a transparent
    background stands for.
    """
    if "A" not in image.getbands() and "transparency" not in image.info:
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


def load_image_files(paths: Sequence[str | os.PathLike], fmt: ImageFormat) -> list[np.ndarray]:
    """Decode files in parallel threads (PIL releases the GIL while decoding)."""
    def one(path):
        path = Path(path)
        return decode_image(read_image_file(path), str(path), fmt)

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
