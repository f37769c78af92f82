"""On-device image preprocessing in pure JAX.

The host ships only ``uint8`` image batches; everything below runs inside the jitted train
step on the accelerator. All functions are pure, have static output shapes, contain no Python
control flow on traced values, and can be ``jax.vmap``-ed (e.g. over a task axis).

Image layout is channels-last: ``(..., H, W, C)`` with ``C`` in ``{1, 3}``. Any number of
leading axes is accepted; every image along the flattened leading axes draws its own
independent random parameters. Float images live on the ``[0, 1]`` scale unless said
otherwise (``to_float`` maps ``uint8`` to that scale, like torchvision's ``ToTensor``).

The training pipelines mirror the torchvision transforms used by the SIB reference:

* miniImageNet (84x84 stored): ``RandomCrop(80, padding=8) -> ColorJitter(0.4, 0.4, 0.4)
  -> RandomHorizontalFlip -> ToTensor -> Normalize``; eval: ``CenterCrop(80) -> ToTensor ->
  Normalize``.
* CIFAR-FS (32x32): ``RandomCrop(32, padding=4) -> ColorJitter(0.4, 0.4, 0.4) ->
  RandomHorizontalFlip -> ToTensor -> Normalize``; eval: ``ToTensor -> Normalize``.
* Omniglot (28x28x1): ``ToTensor`` only (mean 0, std 1); a padded random crop can be switched
  on with ``dataclasses.replace(OMNIGLOT, crop_padding=...)``, and small affine distortions
  of the handwriting (torchvision ``RandomAffine``) with the ``affine_*`` fields
  (``OMNIGLOT_AFFINE``).

Differences from the reference, which works on PIL images: the colour-jitter arithmetic is
done in float32 with no intermediate rounding to ``uint8`` (PIL rounds after every step and
rounds the greyscale mean used by the contrast step to an integer). The sampled factor
distributions, the random order of the three jitter operations and the clipping to ``[0, 1]``
follow torchvision.

The deterministic operations (``to_float``, ``normalize``, ``center_crop``, the colour
adjustments) are in ``image_ops``, the affine distortions in ``affine``; both are re-exported
here. Random crops and flips are dm-pix's (``dm_pix.random_crop``,
``dm_pix.random_flip_left_right``), one key per image. The colour jitter and the affine
warp are not: dm-pix's colour operations follow TensorFlow (an added brightness delta,
contrast about each channel's mean, saturation through HSV) where torchvision, and the
reference, multiply the brightness, take the contrast about the greyscale mean and blend
the saturation with greyscale; and dm-pix's ``affine_transform`` in constant mode drops
a border pixel whose bilinear neighbours leave the image, where torchvision's
``grid_sample`` blends them with the fill (``jax.scipy.ndimage.map_coordinates`` does too).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import dm_pix as pix
import jax
import jax.numpy as jnp

from metaunlab.data.affine import affine_warp, random_affine, sample_affine_params
from metaunlab.data.image_ops import (
    BRIGHTNESS,
    CONTRAST,
    SATURATION,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    as_unit_float,
    center_crop,
    check_images,
    flatten,
    normalize,
    pair,
    rgb_to_grayscale,
    to_float,
    unflatten,
)
from metaunlab.errors import ConfigError

Array = jax.Array

__all__ = [
    "CIFAR_FS",
    "MINIIMAGENET",
    "OMNIGLOT",
    "PRESETS",
    "ImageTransform",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "affine_warp",
    "apply_color_jitter",
    "center_crop",
    "color_jitter",
    "normalize",
    "preset",
    "random_affine",
    "random_crop",
    "random_flip",
    "rgb_to_grayscale",
    "sample_affine_params",
    "sample_jitter_params",
    "to_float",
]

# --------------------------------------------------------------------------------------------
# random transforms
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("size", "padding"))
def random_crop(rng: Array, images: Array, size: int | tuple[int, int], padding: int = 0) -> Array:
    """Random ``size`` crop after zero-padding each border by ``padding`` pixels.

    Matches torchvision ``RandomCrop(size, padding)`` with its default constant fill 0 (black,
    for both ``uint8`` and ``[0, 1]`` float images). Works on any dtype. Every image draws its
    own top/left offsets uniformly from ``0 .. H + 2 * padding - size`` (resp. W), with its
    own key, through ``dm_pix.random_crop``.
    """
    flat, lead = flatten(images)
    crop_h, crop_w = pair(size)
    if padding:
        flat = jnp.pad(flat, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    if crop_h > flat.shape[1] or crop_w > flat.shape[2]:
        raise ValueError(f"crop {(crop_h, crop_w)} larger than padded image {flat.shape[1:3]}")
    keys = jax.random.split(rng, flat.shape[0])
    crop_one = functools.partial(pix.random_crop, crop_sizes=(crop_h, crop_w, flat.shape[-1]))
    return unflatten(jax.vmap(crop_one)(keys, flat), lead)


@jax.jit
def random_flip(rng: Array, images: Array) -> Array:
    """Horizontal flip of each image independently with probability 0.5, each with its own
    key (``dm_pix.random_flip_left_right``)."""
    flat, lead = flatten(images)
    keys = jax.random.split(rng, flat.shape[0])
    return unflatten(jax.vmap(pix.random_flip_left_right)(keys, flat), lead)


@functools.partial(jax.jit, static_argnames=("num", "brightness", "contrast", "saturation"))
def sample_jitter_params(
    rng: Array, num: int, brightness: float, contrast: float, saturation: float
) -> tuple[Array, Array]:
    """Sample ColorJitter parameters for ``num`` images.

    Returns ``(factors, orders)``:

    * ``factors``: float32 ``(num, 3)``; column ``i`` (brightness, contrast, saturation) is
      uniform on ``[max(0, 1 - s_i), 1 + s_i]`` and exactly 1 when ``s_i == 0``.
    * ``orders``: int32 ``(num, 3)``, a uniformly random permutation of ``(0, 1, 2)`` per image;
      ``orders[n, k]`` is the operation applied at step ``k`` (torchvision draws a fresh
      ``randperm`` per call, i.e. per image in a DataLoader).
    """
    strengths = (brightness, contrast, saturation)
    for s in strengths:
        if s < 0:
            raise ValueError(f"jitter strengths must be non-negative, got {strengths}")
    low = jnp.array([max(0.0, 1.0 - s) for s in strengths], dtype=jnp.float32)
    high = jnp.array([1.0 + s for s in strengths], dtype=jnp.float32)
    k_factor, k_order = jax.random.split(rng)
    u = jax.random.uniform(k_factor, (num, 3), dtype=jnp.float32)
    factors = jnp.where(high > low, low + (high - low) * u, 1.0)
    # argsort of i.i.d. uniforms is a uniformly random permutation.
    orders = jnp.argsort(jax.random.uniform(k_order, (num, 3)), axis=-1).astype(jnp.int32)
    return factors, orders


@jax.jit
def apply_color_jitter(images: Array, factors: Array, orders: Array) -> Array:
    """Apply brightness/contrast/saturation with given per-image factors, in the given order.

    ``images``: float ``(..., H, W, C)`` in ``[0, 1]``; ``factors``/``orders``: ``(..., 3)`` as
    returned by ``sample_jitter_params`` (leading axes matching the images'). Each operation
    clips its result to ``[0, 1]``, so the order matters.

    All three operations are blends ``clip(f * x + (1 - f) * target, 0, 1)`` that differ only
    in the target (black, the greyscale mean, the greyscale image), so each of the three steps
    is one blend whose factor and target are selected per image by ``orders`` -- no
    ``lax.switch`` is needed and nothing is computed three times.
    """
    images = images.astype(jnp.float32)
    factors = jnp.asarray(factors, jnp.float32)
    if images.shape[-1] == 1:  # saturation is a no-op on greyscale images
        factors = factors.at[..., SATURATION].set(1.0)
    step_factors = jnp.take_along_axis(factors, orders, axis=-1)
    x = images
    for step in range(3):  # static unroll; the operation index is traced
        op = orders[..., step][..., None, None, None]
        f = step_factors[..., step][..., None, None, None]
        gray = rgb_to_grayscale(x)
        gray_mean = jnp.mean(gray, axis=(-3, -2, -1), keepdims=True)
        target = jnp.where(op == BRIGHTNESS, 0.0, jnp.where(op == CONTRAST, gray_mean, gray))
        x = jnp.clip(f * x + (1.0 - f) * target, 0.0, 1.0)
    return x


@functools.partial(jax.jit, static_argnames=("brightness", "contrast", "saturation"))
def color_jitter(
    rng: Array,
    images: Array,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
) -> Array:
    """torchvision ``ColorJitter(brightness, contrast, saturation)`` on ``[0, 1]`` float images.

    Per image: factors uniform on ``[max(0, 1 - s), 1 + s]``; brightness blends with black
    (``x * f``), contrast blends with the scalar mean of the greyscale image, saturation blends
    with the greyscale image (no-op for 1 channel); each result is clipped to ``[0, 1]``. As in
    torchvision the three operations are applied in a fresh uniformly random order per image
    (a sampled permutation, see ``sample_jitter_params``/``apply_color_jitter``). Strengths are
    static; all-zero strengths return the input unchanged.
    """
    if brightness == 0 and contrast == 0 and saturation == 0:
        return images
    check_images(images)
    lead = images.shape[:-3]
    factors, orders = sample_jitter_params(rng, math.prod(lead), brightness, contrast, saturation)
    return apply_color_jitter(images, factors.reshape(lead + (3,)), orders.reshape(lead + (3,)))


# --------------------------------------------------------------------------------------------
# pipelines
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """A (hashable) train/eval preprocessing pipeline from ``uint8`` to normalised float32.

    Train: ``random_crop`` (if ``crop_size`` is set or ``crop_padding > 0``; ``crop_size=None``
    then means "input size") -> ``to_float`` -> ``random_affine(affine_degrees,
    affine_translate, affine_scale, affine_shear)`` (if any of them distorts) ->
    ``color_jitter(jitter, jitter, jitter)`` (if ``jitter > 0``) -> ``random_flip`` (if
    ``flip``) -> ``normalize(mean, std)``.
    Eval: ``center_crop`` (if ``center_crop`` is set) -> ``to_float`` -> ``normalize``.

    ``mean``/``std`` are on the ``[0, 1]`` scale, with 1 or C entries.
    """

    crop_size: int | None = None
    crop_padding: int = 0
    center_crop: int | None = None
    flip: bool = False
    jitter: float = 0.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    affine_degrees: float = 0.0
    affine_translate: float = 0.0
    affine_scale: tuple[float, float] = (1.0, 1.0)
    affine_shear: float = 0.0

    def __post_init__(self) -> None:
        # Coerce to tuples of floats so the instance stays hashable.
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean {mean} and std {std} must be non-empty, of equal length")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")
        scale = tuple(float(z) for z in self.affine_scale)
        object.__setattr__(self, "affine_scale", scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"affine_scale must be (low, high) with 0 < low <= high, got {scale}")
        if min(self.affine_degrees, self.affine_translate, self.affine_shear) < 0:
            raise ValueError("affine_degrees, affine_translate and affine_shear must be >= 0")

    @property
    def _affine(self) -> bool:
        return (self.affine_degrees > 0 or self.affine_translate > 0 or self.affine_shear > 0
                or self.affine_scale != (1.0, 1.0))

    @property
    def _random_crop(self) -> bool:
        return self.crop_size is not None or self.crop_padding > 0

    @property
    def train_equals_eval(self) -> bool:
        """Whether ``train`` draws nothing at random and so computes exactly ``eval``: then a
        frozen backbone maps each training image to one feature vector, computable once."""
        return (not self._random_crop and not self._affine and self.jitter == 0
                and not self.flip and self.center_crop is None)

    def output_size(self, input_size: int) -> int:
        """Spatial size of ``train`` and ``eval`` outputs for square ``input_size`` inputs.

        Raises ``ValueError`` if the two paths would disagree.
        """
        train_size = self.crop_size if self.crop_size is not None else input_size
        eval_size = self.center_crop if self.center_crop is not None else input_size
        if train_size != eval_size:
            raise ValueError(
                f"train output {train_size} != eval output {eval_size} for input {input_size}"
            )
        if train_size > input_size + 2 * self.crop_padding or eval_size > input_size:
            raise ValueError(f"crop larger than the (padded) input of size {input_size}")
        return train_size

    @functools.partial(jax.jit, static_argnums=0)
    def train(self, rng: Array, images: Array) -> Array:
        """Random training augmentation of ``(..., H, W, C)`` uint8 images -> float32."""
        k_crop, k_jitter, k_flip = jax.random.split(rng, 3)
        x = images
        if self._random_crop:
            size = self.crop_size if self.crop_size is not None else (x.shape[-3], x.shape[-2])
            x = random_crop(k_crop, x, size, self.crop_padding)
        x = as_unit_float(x)
        if self._affine:
            # A key of its own, so that adding a distortion leaves the other draws unchanged.
            x = random_affine(jax.random.fold_in(rng, 3), x, self.affine_degrees,
                              self.affine_translate, self.affine_scale, self.affine_shear)
        if self.jitter > 0:
            x = color_jitter(k_jitter, x, self.jitter, self.jitter, self.jitter)
        if self.flip:
            x = random_flip(k_flip, x)
        return normalize(x, self.mean, self.std)

    @functools.partial(jax.jit, static_argnums=0)
    def eval(self, images: Array) -> Array:
        """Deterministic evaluation preprocessing of uint8 images -> float32."""
        x = images
        if self.center_crop is not None:
            x = center_crop(x, self.center_crop)
        return normalize(as_unit_float(x), self.mean, self.std)


MINIIMAGENET = ImageTransform(
    crop_size=80,
    crop_padding=8,
    center_crop=80,
    flip=True,
    jitter=0.4,
    mean=tuple(x / 255.0 for x in (120.39586422, 115.59361427, 104.54012653)),
    std=tuple(x / 255.0 for x in (70.68188272, 68.27635443, 72.54505529)),
)

CIFAR_FS = ImageTransform(
    crop_size=32,
    crop_padding=4,
    center_crop=None,
    flip=True,
    jitter=0.4,
    mean=tuple(x / 255.0 for x in (129.37731888, 124.10583864, 112.47758569)),
    std=tuple(x / 255.0 for x in (68.20947949, 65.43124043, 70.45866994)),
)

OMNIGLOT = ImageTransform(
    crop_size=None,
    crop_padding=0,
    center_crop=None,
    flip=False,
    jitter=0.0,
    mean=(0.0,),
    std=(1.0,),
)

# Omniglot with random translations of up to 2 pixels (zero padding = background), used to
# pretrain the backbone: with only a few hundred characters it overfits without them.
OMNIGLOT_SHIFT = dataclasses.replace(OMNIGLOT, crop_padding=2)

# Omniglot with small affine distortions of the handwriting (rotation, shift, zoom, shear),
# to pretrain the backbone on few alphabets. The strengths are chosen on validation
# episodes (docs/omniglot.md).
OMNIGLOT_AFFINE = dataclasses.replace(OMNIGLOT, affine_degrees=10.0, affine_translate=0.07,
                                      affine_scale=(0.9, 1.1), affine_shear=10.0)

PRESETS: dict[str, ImageTransform] = {
    "miniimagenet": MINIIMAGENET,
    "cifar_fs": CIFAR_FS,
    "omniglot": OMNIGLOT,
    "omniglot_shift": OMNIGLOT_SHIFT,
    "omniglot_affine": OMNIGLOT_AFFINE,
}


def _canonical(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def preset(name: str) -> ImageTransform:
    """Preset by dataset name (case, ``-`` and ``_`` insensitive: ``"CIFAR-FS"`` works)."""
    for key, transform in PRESETS.items():
        if _canonical(key) == _canonical(name):
            return transform
    raise ConfigError(f"unknown image transform preset {name!r}; valid names: {sorted(PRESETS)}")
