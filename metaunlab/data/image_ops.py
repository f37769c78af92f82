"""Deterministic image operations in pure JAX, shared by the augmentations (``augment``).

Layout ``(..., H, W, C)``, ``C`` in ``{1, 3}``, any number of leading axes; float images on the
``[0, 1]`` scale (``to_float`` maps ``uint8`` there, like torchvision's ``ToTensor``). The
colour operations blend with a target and clip, as torchvision's functional ops do.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

# ITU-R 601-2 luma weights, as used by PIL's ``convert("L")`` and torchvision.
LUMA = (0.299, 0.587, 0.114)

# Index of each jitter operation in ``factors[..., i]`` and in the ``orders`` arrays.
BRIGHTNESS, CONTRAST, SATURATION = 0, 1, 2


def pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def check_images(images: Array) -> None:
    if images.ndim < 3:
        raise ValueError(f"expected images of shape (..., H, W, C), got shape {images.shape}")


def flatten(images: Array) -> tuple[Array, tuple[int, ...]]:
    """Collapse the leading axes: ``(..., H, W, C) -> (N, H, W, C)``."""
    check_images(images)
    lead = images.shape[:-3]
    return images.reshape((math.prod(lead),) + images.shape[-3:]), lead


def unflatten(images: Array, lead: tuple[int, ...]) -> Array:
    return images.reshape(lead + images.shape[1:])


def as_unit_float(images: Array) -> Array:
    """``uint8`` (or other integer) images -> ``[0, 1]`` float32; float images pass through."""
    if jnp.issubdtype(images.dtype, jnp.integer):
        return to_float(images)
    return images.astype(jnp.float32)


def per_image(factor: Array | float, images: Array) -> Array:
    """Broadcast a per-image scalar (shape = leading axes of ``images``) over H, W, C."""
    factor = jnp.asarray(factor, dtype=images.dtype)
    return factor[..., None, None, None]


@jax.jit
def to_float(images: Array) -> Array:
    """``uint8`` images -> float32 on the ``[0, 1]`` scale (torchvision ``ToTensor``)."""
    return images.astype(jnp.float32) / 255.0


@jax.jit
def normalize(images: Array, mean: Sequence[float] | Array, std: Sequence[float] | Array) -> Array:
    """``(images - mean) / std`` per channel (last axis); ``mean``/``std`` have 1 or C entries."""
    mean_arr = jnp.atleast_1d(jnp.asarray(mean, dtype=jnp.float32))
    std_arr = jnp.atleast_1d(jnp.asarray(std, dtype=jnp.float32))
    channels = images.shape[-1]
    for name, arr in (("mean", mean_arr), ("std", std_arr)):
        if arr.shape[0] not in (1, channels):
            raise ValueError(f"{name} has {arr.shape[0]} entries for {channels}-channel images")
    return (images.astype(jnp.float32) - mean_arr) / std_arr


@functools.partial(jax.jit, static_argnames=("size",))
def center_crop(images: Array, size: int | tuple[int, int]) -> Array:
    """Central ``size`` crop of ``(..., H, W, C)`` images (torchvision ``CenterCrop`` offsets).

    The size must not exceed the image size (torchvision would pad; we refuse).
    """
    check_images(images)
    crop_h, crop_w = pair(size)
    height, width = images.shape[-3], images.shape[-2]
    if crop_h > height or crop_w > width:
        raise ValueError(f"center crop {(crop_h, crop_w)} larger than image {(height, width)}")
    # torchvision: int(round((H - h) / 2)); Python's round is half-to-even and returns an int.
    top = round((height - crop_h) / 2.0)
    left = round((width - crop_w) / 2.0)
    return images[..., top : top + crop_h, left : left + crop_w, :]


def rgb_to_grayscale(images: Array) -> Array:
    """ITU-R 601-2 luma of ``(..., H, W, C)`` float images -> ``(..., H, W, 1)``.

    Single-channel images are returned unchanged.
    """
    if images.shape[-1] == 1:
        return images
    if images.shape[-1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {images.shape[-1]}")
    r, g, b = images[..., 0], images[..., 1], images[..., 2]
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b)[..., None]


def blend(images: Array, other: Array, factor: Array) -> Array:
    return jnp.clip(factor * images + (1.0 - factor) * other, 0.0, 1.0)


def adjust_brightness(images: Array, factor: Array | float) -> Array:
    """Blend with black: ``clip(x * f, 0, 1)``; ``factor`` has the leading shape of images."""
    factor = per_image(factor, images)
    return jnp.clip(images * factor, 0.0, 1.0)


def adjust_contrast(images: Array, factor: Array | float) -> Array:
    """Blend with the (scalar, per image) mean of the greyscale image, then clip to [0, 1]."""
    mean = jnp.mean(rgb_to_grayscale(images), axis=(-3, -2, -1), keepdims=True)
    return blend(images, mean, per_image(factor, images))


def adjust_saturation(images: Array, factor: Array | float) -> Array:
    """Blend with the greyscale image, then clip to [0, 1]; a no-op for 1-channel images."""
    if images.shape[-1] == 1:
        return images
    return blend(images, rgb_to_grayscale(images), per_image(factor, images))
