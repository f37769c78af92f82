"""Random affine distortions of images in pure JAX (torchvision ``RandomAffine``).

``sample_affine_params`` draws one distortion per image, ``affine_warp`` applies given ones,
``random_affine`` does both. Like ``augment``, everything is jittable, has static shapes and
accepts any number of leading axes (every image draws its own distortion).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from metaunlab.data.image_ops import check_images, flatten, unflatten

Array = jax.Array

__all__ = ["affine_warp", "random_affine", "sample_affine_params"]


@functools.partial(jax.jit, static_argnames=("num", "degrees", "translate", "scale", "shear"))
def sample_affine_params(rng: Array, num: int, degrees: float, translate: float,
                         scale: tuple[float, float], shear: float) -> dict[str, Array]:
    """Parameters of ``num`` random affine distortions, as torchvision ``RandomAffine``
    draws them: angles (radians) uniform on ``+-degrees``, shifts (fractions of the image
    side, ``(num, 2)`` as (rows, columns)) uniform on ``+-translate``, zooms uniform on
    ``scale`` and horizontal shear angles (radians) uniform on ``+-shear``."""
    k_angle, k_shift, k_zoom, k_shear = jax.random.split(rng, 4)
    return {
        "angle": jnp.deg2rad(jax.random.uniform(k_angle, (num,), minval=-degrees,
                                                maxval=degrees)),
        "shift": jax.random.uniform(k_shift, (num, 2), minval=-translate, maxval=translate),
        "zoom": jax.random.uniform(k_zoom, (num,), minval=scale[0], maxval=scale[1]),
        "shear": jnp.deg2rad(jax.random.uniform(k_shear, (num,), minval=-shear, maxval=shear)),
    }


@jax.jit
def affine_warp(images: Array, params: dict[str, Array]) -> Array:
    """Warp each float image by its affine map about the image centre, bilinear, filled with
    0 (the background of bright-on-black images); ``params`` as from
    ``sample_affine_params``, with leading axes matching the images'.

    In (row, column) coordinates about the centre ``c`` the map is ``p -> A p + t`` with
    ``A = zoom * rotation(angle) @ shear`` (``shear`` moves columns in proportion to rows)
    and ``t = shift * (H, W)``: output pixel ``p`` reads the input at ``A^-1 (p - c - t) +
    c``, through ``jax.scipy.ndimage.map_coordinates(order=1)``.
    """
    flat, lead = flatten(images)
    n, height, width, channels = flat.shape
    params = jax.tree_util.tree_map(lambda a: a.reshape((n,) + a.shape[len(lead):]), params)
    centre = jnp.array([(height - 1) / 2, (width - 1) / 2], jnp.float32)
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                              jnp.arange(width, dtype=jnp.float32), indexing="ij")
    grid = jnp.stack([rows.ravel(), cols.ravel()])  # (2, H * W)
    side = jnp.array([height, width], jnp.float32)

    def warp_one(image, p):
        cos, sin = jnp.cos(p["angle"]), jnp.sin(p["angle"])
        rotation = jnp.array([[cos, -sin], [sin, cos]])
        shear = jnp.array([[1.0, 0.0], [jnp.tan(p["shear"]), 1.0]])
        forward = p["zoom"] * rotation @ shear
        offset = centre + p["shift"] * side
        source = jnp.linalg.inv(forward) @ (grid - offset[:, None]) + centre[:, None]

        def sample(plane):
            return jax.scipy.ndimage.map_coordinates(plane, [source[0], source[1]], order=1,
                                                     mode="constant", cval=0.0)

        return jax.vmap(sample, in_axes=-1, out_axes=-1)(image).reshape(height, width, channels)

    return unflatten(jax.vmap(warp_one)(flat.astype(jnp.float32), params), lead)


@functools.partial(jax.jit, static_argnames=("degrees", "translate", "scale", "shear"))
def random_affine(rng: Array, images: Array, degrees: float = 0.0, translate: float = 0.0,
                  scale: tuple[float, float] = (1.0, 1.0), shear: float = 0.0) -> Array:
    """torchvision ``RandomAffine(degrees, (translate, translate), scale, shear)`` on float
    images: every image draws its own distortion (``sample_affine_params``), applied by
    ``affine_warp`` (bilinear, filled with 0)."""
    check_images(images)
    lead = images.shape[:-3]
    params = sample_affine_params(rng, math.prod(lead), degrees, translate, scale, shear)
    params = jax.tree_util.tree_map(lambda a: a.reshape(lead + a.shape[1:]), params)
    return affine_warp(images, params)
