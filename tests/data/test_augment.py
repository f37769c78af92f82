"""Tests for metaunlab.data.augment (on-device image preprocessing)."""

from __future__ import annotations

import dataclasses
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab.data import augment as aug

LUMA = np.array([0.299, 0.587, 0.114], np.float32)

# a small pipeline with every stage switched on, for cheap compiles
SMALL = aug.ImageTransform(
    crop_size=8, crop_padding=2, flip=True, jitter=0.4, mean=(0.5, 0.4, 0.3), std=(0.2,) * 3
)


def _uint8_images(shape, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=shape).astype(np.uint8)


def _np_gray(x):
    return x if x.shape[-1] == 1 else (x @ LUMA)[..., None]


def _np_jitter_one(x, factors, order):
    """Numpy reference of torchvision's float ColorJitter for one (H, W, C) image."""
    for op in order:
        f = factors[op]
        if op == aug.BRIGHTNESS:
            x = np.clip(x * f, 0, 1)
        elif op == aug.CONTRAST:
            x = np.clip(f * x + (1 - f) * _np_gray(x).mean(), 0, 1)
        elif x.shape[-1] == 3:
            x = np.clip(f * x + (1 - f) * _np_gray(x), 0, 1)
    return x


# ------------------------------------------------------------------------------------------
# shapes, jit, vmap
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "transform, shape, out",
    [
        (aug.MINIIMAGENET, (3, 84, 84, 3), 80),
        (aug.CIFAR_FS, (3, 32, 32, 3), 32),
        (aug.OMNIGLOT, (3, 28, 28, 1), 28),
    ],
)
def test_preset_shapes_and_dtypes(transform, shape, out):
    x = jnp.asarray(_uint8_images(shape))
    train = transform.train(jax.random.key(0), x)
    evaluated = transform.eval(x)
    expected = shape[:1] + (out, out) + shape[-1:]
    chex.assert_shape([train, evaluated], expected)
    chex.assert_type([train, evaluated], jnp.float32)
    chex.assert_tree_all_finite([train, evaluated])
    assert transform.output_size(shape[1]) == out


def test_function_shapes():
    x = jnp.asarray(_uint8_images((2, 5, 12, 10, 3)))  # arbitrary leading axes
    key = jax.random.key(0)
    xf = aug.to_float(x)
    chex.assert_type(xf, jnp.float32)
    np.testing.assert_allclose(np.asarray(xf), np.asarray(x) / 255.0, rtol=1e-6)
    chex.assert_shape(aug.center_crop(x, 8), (2, 5, 8, 8, 3))
    chex.assert_shape(aug.center_crop(x, (6, 4)), (2, 5, 6, 4, 3))
    chex.assert_shape(aug.random_crop(key, x, 8, 2), (2, 5, 8, 8, 3))
    chex.assert_shape(aug.random_flip(key, x), x.shape)
    chex.assert_shape(aug.color_jitter(key, xf, 0.4, 0.4, 0.4), x.shape)
    chex.assert_shape(aug.normalize(xf, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)), x.shape)
    assert aug.random_crop(key, x, 8, 2).dtype == jnp.uint8  # crop keeps the dtype


def test_train_under_outer_jit_with_static_transform():
    x = jnp.asarray(_uint8_images((6, 10, 10, 3)))
    key = jax.random.key(3)

    @jax.jit
    def step(rng, images):  # transform used as a closure constant
        return SMALL.train(rng, images).sum()

    step_static = jax.jit(lambda t, r, im: t.train(r, im).sum(), static_argnums=0)
    direct = np.asarray(SMALL.train(key, x), np.float64).sum()
    np.testing.assert_allclose(step(key, x), direct, rtol=1e-4)
    np.testing.assert_allclose(step_static(SMALL, key, x), direct, rtol=1e-4)
    # an equal (but distinct) instance hashes equal, so it is the same static argument
    clone = dataclasses.replace(aug.CIFAR_FS)
    assert clone == aug.CIFAR_FS and hash(clone) == hash(aug.CIFAR_FS)


def test_vmap_over_tasks_matches_loop():
    tasks = jnp.asarray(_uint8_images((3, 4, 32, 32, 3)))
    keys = jax.random.split(jax.random.key(7), 3)
    batched = jax.vmap(aug.CIFAR_FS.train)(keys, tasks)
    looped = jnp.stack([aug.CIFAR_FS.train(keys[t], tasks[t]) for t in range(3)])
    np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-6, atol=1e-6)
    big = jnp.asarray(_uint8_images((2, 3, 84, 84, 3)))
    batched_eval = jax.vmap(aug.MINIIMAGENET.eval)(big)
    looped_eval = jnp.stack([aug.MINIIMAGENET.eval(big[t]) for t in range(2)])
    np.testing.assert_array_equal(batched_eval, looped_eval)


def test_leading_axes_are_flattened_consistently():
    x = jnp.asarray(_uint8_images((2, 3, 10, 10, 3)))
    flat = x.reshape((6, 10, 10, 3))
    key = jax.random.key(11)
    for fn in (
        lambda im: aug.random_crop(key, im, 8, 2),
        lambda im: aug.random_flip(key, im),
        lambda im: SMALL.train(key, im),
    ):
        expected = fn(flat)
        np.testing.assert_array_equal(np.asarray(fn(x)).reshape(expected.shape), expected)


def test_same_rng_same_output_different_rng_different():
    x = jnp.asarray(_uint8_images((3, 84, 84, 3)))
    a = aug.MINIIMAGENET.train(jax.random.key(0), x)
    b = aug.MINIIMAGENET.train(jax.random.key(0), x)
    c = aug.MINIIMAGENET.train(jax.random.key(1), x)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    xf = aug.to_float(x)
    for fn in (
        lambda k: aug.random_crop(k, x, 80, 8),
        lambda k: aug.random_flip(k, x),
        lambda k: aug.color_jitter(k, xf, 0.4, 0.4, 0.4),
    ):
        np.testing.assert_array_equal(fn(jax.random.key(5)), fn(jax.random.key(5)))
        assert not np.array_equal(fn(jax.random.key(5)), fn(jax.random.key(6)))


# ------------------------------------------------------------------------------------------
# crops and flips
# ------------------------------------------------------------------------------------------


def test_random_crop_full_size_no_padding_is_identity():
    x = jnp.asarray(_uint8_images((5, 12, 12, 3)))
    np.testing.assert_array_equal(aug.random_crop(jax.random.key(0), x, 12, 0), x)


def test_random_crop_offsets_cover_full_range():
    size, pad, n = 8, 3, 800
    # channel 0 encodes 1 + the (row, col) position in the original image; padding stays 0
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    code = (1 + rows * size + cols).astype(np.uint8)
    image = np.stack([code, np.full_like(code, 255)], axis=-1)
    images = jnp.asarray(np.broadcast_to(image, (n, size, size, 2)))
    out = np.asarray(aug.random_crop(jax.random.key(42), images, size, pad))

    valid = out[..., 1] == 255  # original pixels; padded pixels are all-zero
    assert np.all(out[~valid] == 0)
    flat_idx = valid.reshape(n, -1).argmax(axis=1)  # first original pixel in each crop
    i, j = np.divmod(flat_idx, size)
    v = out[np.arange(n), i, j, 0].astype(int) - 1
    y, x = np.divmod(v, size)
    off_y, off_x = y + pad - i, x + pad - j  # top-left offset in the padded image
    assert set(off_y) == set(range(2 * pad + 1))
    assert set(off_x) == set(range(2 * pad + 1))
    # the crop is consistent with that offset everywhere
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    for k in range(0, n, 97):
        np.testing.assert_array_equal(
            out[k], padded[off_y[k] : off_y[k] + size, off_x[k] : off_x[k] + size]
        )
    # zero borders appear sometimes (and not always)
    has_pad = (~valid).reshape(n, -1).any(axis=1)
    assert 0.5 < has_pad.mean() < 1.0
    # offsets roughly uniform
    counts = np.bincount(off_y, minlength=2 * pad + 1)
    assert counts.min() > n / (2 * pad + 1) / 2


def test_center_crop_matches_torchvision_offsets():
    x = _uint8_images((2, 85, 84, 3))
    # torchvision: top = int(round((85 - 80) / 2)) = 2 (half to even), left = 2
    np.testing.assert_array_equal(aug.center_crop(jnp.asarray(x), 80), x[:, 2:82, 2:82])
    with pytest.raises(ValueError):
        aug.center_crop(jnp.asarray(x), 90)


def test_random_flip_frequency_and_reversal():
    n = 2000
    x = jnp.asarray(_uint8_images((n, 4, 6, 3)))
    out = np.asarray(aug.random_flip(jax.random.key(9), x))
    xn = np.asarray(x)
    same = np.all(out == xn, axis=(1, 2, 3))
    flipped = np.all(out == xn[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same ^ flipped)  # each image is either untouched or exactly mirrored
    assert abs(flipped.mean() - 0.5) < 0.05


# ------------------------------------------------------------------------------------------
# colour jitter
# ------------------------------------------------------------------------------------------


def test_color_jitter_zero_strength_is_identity():
    x = aug.to_float(jnp.asarray(_uint8_images((6, 8, 8, 3))))
    np.testing.assert_array_equal(aug.color_jitter(jax.random.key(0), x, 0.0, 0.0, 0.0), x)
    orders = jnp.tile(jnp.arange(3), (6, 1))
    np.testing.assert_array_equal(aug.apply_color_jitter(x, jnp.ones((6, 3)), orders), x)


def test_brightness_ratio_uniform():
    n = 4000
    base = np.random.RandomState(1).uniform(0.2, 0.7, size=(n, 1, 1, 3)).astype(np.float32)
    x = jnp.asarray(np.broadcast_to(base, (n, 3, 3, 3)))
    out = np.asarray(aug.color_jitter(jax.random.key(2), x, brightness=0.4))
    ratio = out / np.asarray(x)
    per_image = ratio[:, 0, 0, 0]
    np.testing.assert_allclose(
        ratio, np.broadcast_to(per_image[:, None, None, None], ratio.shape), rtol=1e-5
    )
    assert per_image.min() >= 0.6 - 1e-5 and per_image.max() <= 1.4 + 1e-5
    assert per_image.min() < 0.62 and per_image.max() > 1.38
    assert abs(per_image.mean() - 1.0) < 0.02
    assert abs(per_image.std() - 0.8 / np.sqrt(12)) < 0.02  # uniform on [0.6, 1.4]


def test_contrast_keeps_greyscale_mean():
    n = 500
    x = np.random.RandomState(3).uniform(0.35, 0.65, size=(n, 6, 6, 3)).astype(np.float32)
    out = np.asarray(aug.color_jitter(jax.random.key(4), jnp.asarray(x), contrast=0.4))
    np.testing.assert_allclose(
        _np_gray(out).mean(axis=(1, 2, 3)), _np_gray(x).mean(axis=(1, 2, 3)), atol=1e-5
    )
    spread_in = x.std(axis=(1, 2, 3))
    spread_out = out.std(axis=(1, 2, 3))
    ratio = spread_out / spread_in
    assert ratio.min() < 0.65 and ratio.max() > 1.35  # the contrast really changes


def test_saturation_leaves_grey_images_unchanged():
    grey = np.random.RandomState(5).uniform(0, 1, size=(50, 6, 6, 1)).astype(np.float32)
    rgb = jnp.asarray(np.repeat(grey, 3, axis=-1))
    out = aug.color_jitter(jax.random.key(6), rgb, saturation=0.4)
    np.testing.assert_allclose(out, rgb, atol=1e-6)
    # one channel: saturation is a no-op
    out1 = aug.color_jitter(jax.random.key(6), jnp.asarray(grey), saturation=0.4)
    np.testing.assert_array_equal(out1, grey)
    # but colour images do change
    colour = aug.to_float(jnp.asarray(_uint8_images((50, 6, 6, 3))))
    assert not np.allclose(aug.color_jitter(jax.random.key(6), colour, saturation=0.4), colour)


def test_jitter_params_and_random_order():
    n = 3000
    factors, orders = aug.sample_jitter_params(jax.random.key(8), n, 0.4, 0.2, 1.5)
    factors, orders = np.asarray(factors), np.asarray(orders)
    chex.assert_shape([factors, orders], (n, 3))
    for col, s in enumerate((0.4, 0.2, 1.5)):
        lo, hi = max(0.0, 1 - s), 1 + s
        assert factors[:, col].min() >= lo and factors[:, col].max() <= hi
        assert factors[:, col].min() < lo + 0.05 * s and factors[:, col].max() > hi - 0.05 * s
    assert np.all(np.sort(orders, axis=1) == np.arange(3))
    perms = {p: 0 for p in itertools.permutations(range(3))}
    for row in orders:
        perms[tuple(row)] += 1
    assert min(perms.values()) > n / 6 * 0.8  # all 6 orders, roughly uniform


def test_apply_color_jitter_matches_numpy_for_every_order():
    x = np.asarray(aug.to_float(jnp.asarray(_uint8_images((6, 7, 5, 3), seed=4))))
    factors = np.array([[1.4, 0.6, 1.3]] * 6, np.float32)
    orders = np.array(list(itertools.permutations(range(3))), np.int32)
    out = np.asarray(aug.apply_color_jitter(jnp.asarray(x), factors, orders))
    expected = np.stack([_np_jitter_one(x[k], factors[k], orders[k]) for k in range(6)])
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert len({out[k].tobytes() for k in range(6)}) > 1  # order matters with clipping


def test_color_jitter_is_sample_then_apply():
    x = aug.to_float(jnp.asarray(_uint8_images((2, 4, 6, 6, 3))))
    key = jax.random.key(12)
    out = aug.color_jitter(key, x, 0.4, 0.3, 0.2)
    factors, orders = aug.sample_jitter_params(key, 8, 0.4, 0.3, 0.2)
    expected = aug.apply_color_jitter(x.reshape(8, 6, 6, 3), factors, orders)
    np.testing.assert_array_equal(np.asarray(out).reshape(8, 6, 6, 3), expected)
    xn, fn, on = np.asarray(x).reshape(8, 6, 6, 3), np.asarray(factors), np.asarray(orders)
    ref = np.stack([_np_jitter_one(xn[k], fn[k], on[k]) for k in range(8)])
    np.testing.assert_allclose(expected, ref, atol=1e-5)
    assert np.all((np.asarray(out) >= 0) & (np.asarray(out) <= 1))


# ------------------------------------------------------------------------------------------
# normalisation, eval path, presets
# ------------------------------------------------------------------------------------------


MINI_MEAN = np.array([120.40, 115.59, 104.54]) / 255.0
MINI_STD = np.array([70.68, 68.28, 72.55]) / 255.0
CIFAR_MEAN = np.array([129.38, 124.11, 112.48]) / 255.0
CIFAR_STD = np.array([68.21, 65.43, 70.46]) / 255.0


def test_preset_statistics_match_reference():
    tol = 0.006 / 255.0  # the reference values above are rounded to 2 decimals
    np.testing.assert_allclose(aug.MINIIMAGENET.mean, MINI_MEAN, atol=tol)
    np.testing.assert_allclose(aug.MINIIMAGENET.std, MINI_STD, atol=tol)
    np.testing.assert_allclose(aug.CIFAR_FS.mean, CIFAR_MEAN, atol=tol)
    np.testing.assert_allclose(aug.CIFAR_FS.std, CIFAR_STD, atol=tol)
    assert aug.OMNIGLOT.mean == (0.0,) and aug.OMNIGLOT.std == (1.0,)


def test_normalize_matches_numpy():
    x = _uint8_images((3, 84, 84, 3))
    out = aug.normalize(aug.to_float(jnp.asarray(x)), aug.MINIIMAGENET.mean, aug.MINIIMAGENET.std)
    expected = (x / 255.0 - MINI_MEAN) / MINI_STD
    np.testing.assert_allclose(out, expected, atol=2e-4)


def test_eval_is_deterministic_center_crop_plus_normalize():
    x = _uint8_images((4, 84, 84, 3))
    out1 = np.asarray(aug.MINIIMAGENET.eval(jnp.asarray(x)))
    out2 = np.asarray(aug.MINIIMAGENET.eval(jnp.asarray(x)))
    np.testing.assert_array_equal(out1, out2)
    mean, std = np.asarray(aug.MINIIMAGENET.mean), np.asarray(aug.MINIIMAGENET.std)
    expected = (x[:, 2:82, 2:82] / 255.0 - mean) / std
    np.testing.assert_allclose(out1, expected, atol=1e-5)
    # CIFAR-FS eval: normalise only; Omniglot: plain /255
    xc = _uint8_images((4, 32, 32, 3))
    mean_c, std_c = np.asarray(aug.CIFAR_FS.mean), np.asarray(aug.CIFAR_FS.std)
    np.testing.assert_allclose(
        aug.CIFAR_FS.eval(jnp.asarray(xc)), (xc / 255.0 - mean_c) / std_c, atol=1e-5
    )
    xo = _uint8_images((4, 28, 28, 1))
    np.testing.assert_allclose(aug.OMNIGLOT.eval(jnp.asarray(xo)), xo / 255.0, rtol=1e-6)


def test_train_padding_is_black_before_normalisation():
    # white images: after crop + jitter the padded border is black, i.e. -mean/std
    no_jitter = dataclasses.replace(aug.MINIIMAGENET, jitter=0.0, flip=False)
    x = jnp.full((64, 84, 84, 3), 255, jnp.uint8)
    out = np.asarray(no_jitter.train(jax.random.key(0), x))
    black = -np.asarray(no_jitter.mean) / np.asarray(no_jitter.std)
    white = (1 - np.asarray(no_jitter.mean)) / np.asarray(no_jitter.std)
    is_black = np.all(np.isclose(out, black, atol=1e-5), axis=-1)
    is_white = np.all(np.isclose(out, white, atol=1e-5), axis=-1)
    assert np.all(is_black | is_white)
    assert is_black.any() and is_white.all(axis=(1, 2)).any()


def test_omniglot_optional_crop():
    t = dataclasses.replace(aug.OMNIGLOT, crop_padding=2)
    x = jnp.asarray(_uint8_images((16, 28, 28, 1)))
    out = t.train(jax.random.key(0), x)
    chex.assert_shape(out, (16, 28, 28, 1))
    assert t.output_size(28) == 28
    np.testing.assert_allclose(aug.OMNIGLOT.train(jax.random.key(0), x), x / 255.0, rtol=1e-6)


def test_preset_lookup_and_validation():
    assert aug.preset("miniimagenet") is aug.MINIIMAGENET
    assert aug.preset("miniImageNet") is aug.MINIIMAGENET
    assert aug.preset("CIFAR-FS") is aug.CIFAR_FS
    assert aug.preset("cifar_fs") is aug.CIFAR_FS
    assert aug.preset("omniglot") is aug.OMNIGLOT
    with pytest.raises(ValueError, match=r"cifar_fs.*miniimagenet.*omniglot"):
        aug.preset("imagenet")
    with pytest.raises(ValueError):
        aug.ImageTransform(mean=(0.5, 0.5), std=(1.0,))
    with pytest.raises(ValueError):
        dataclasses.replace(aug.MINIIMAGENET, center_crop=None).output_size(84)
    assert {aug.MINIIMAGENET: 1, aug.CIFAR_FS: 2}[aug.preset("cifar-fs")] == 2  # hashable
    lists = aug.ImageTransform(mean=[0.5], std=[0.25])  # lists are coerced to tuples
    assert lists.mean == (0.5,) and hash(lists) is not None


def test_single_adjust_functions_match_numpy():
    x = np.asarray(aug.to_float(jnp.asarray(_uint8_images((2, 5, 5, 3), seed=9))))
    f = np.array([0.7, 1.3], np.float32)
    ops = {aug.BRIGHTNESS: aug.adjust_brightness, aug.CONTRAST: aug.adjust_contrast}
    ops[aug.SATURATION] = aug.adjust_saturation
    for op, fn in ops.items():
        out = np.asarray(fn(jnp.asarray(x), jnp.asarray(f)))
        factors = np.ones((2, 3), np.float32)
        factors[:, op] = f
        expected = np.stack([_np_jitter_one(x[k], factors[k], [op]) for k in range(2)])
        np.testing.assert_allclose(out, expected, atol=1e-6)


# ------------------------------------------------------------------------------------------
# affine distortions
# ------------------------------------------------------------------------------------------


def _affine_params(angle=0.0, shift=(0.0, 0.0), zoom=1.0, shear=0.0, num=1):
    return {"angle": jnp.full((num,), angle, jnp.float32),
            "shift": jnp.tile(jnp.asarray([shift], jnp.float32), (num, 1)),
            "zoom": jnp.full((num,), zoom, jnp.float32),
            "shear": jnp.full((num,), shear, jnp.float32)}


def test_affine_warp_identity_quarter_turn_and_integer_shift():
    x = aug.to_float(jnp.asarray(_uint8_images((1, 12, 12, 2), seed=3)))
    np.testing.assert_allclose(aug.affine_warp(x, _affine_params()), x, atol=1e-6)
    # The centre of an even-sized image is a pixel corner, so a quarter turn maps pixels
    # onto pixels: a positive angle turns the image as np.rot90 does (counter-clockwise).
    turned = aug.affine_warp(x, _affine_params(angle=np.pi / 2))
    np.testing.assert_allclose(turned, np.rot90(np.asarray(x), 1, axes=(1, 2)), atol=1e-5)
    # A shift of 2/12 of the side moves the image 2 rows down, filling with 0.
    shifted = np.asarray(aug.affine_warp(x, _affine_params(shift=(2 / 12, 0.0))))
    np.testing.assert_allclose(shifted[:, 2:], np.asarray(x)[:, :-2], atol=1e-5)
    np.testing.assert_array_equal(shifted[:, :2], 0.0)


def test_affine_warp_matches_scipy_for_a_general_map():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.asarray(aug.to_float(jnp.asarray(_uint8_images((1, 14, 14, 1), seed=4))))
    angle, shift, zoom, shear = 0.3, (0.05, -0.1), 1.2, -0.2
    out = np.asarray(aug.affine_warp(jnp.asarray(x), _affine_params(angle, shift, zoom, shear)))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = zoom * rotation @ np.array([[1.0, 0.0], [np.tan(shear), 1.0]])
    inverse = np.linalg.inv(forward)
    centre = np.array([6.5, 6.5])
    offset = centre - inverse @ (centre + np.array(shift) * 14)
    # jax's "constant" mode blends with the fill value across the border: scipy's
    # "grid-constant".
    expected = ndimage.affine_transform(x[0, :, :, 0], inverse, offset=offset, order=1,
                                        mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(out[0, :, :, 0], expected, atol=1e-5)


def test_affine_params_cover_their_ranges_independently_per_image():
    p = aug.sample_affine_params(jax.random.key(0), 4000, degrees=10.0, translate=0.1,
                                 scale=(0.8, 1.2), shear=5.0)
    for key, bound in (("angle", np.deg2rad(10.0)), ("shear", np.deg2rad(5.0))):
        values = np.asarray(p[key])
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.95 * bound
        assert abs(values.mean()) < 0.05 * bound
    assert np.abs(np.asarray(p["shift"])).max() <= 0.1
    zoom = np.asarray(p["zoom"])
    assert zoom.min() >= 0.8 and zoom.max() <= 1.2 and zoom.std() > 0.1
    assert np.corrcoef(np.asarray(p["angle"]), zoom)[0, 1] < 0.1


def test_affine_preset_distorts_train_images_only_and_keeps_other_draws():
    x = jnp.asarray(_uint8_images((6, 28, 28, 1), seed=5))
    rng = jax.random.key(1)
    distorted = aug.OMNIGLOT_AFFINE.train(rng, x)
    chex.assert_shape(distorted, (6, 28, 28, 1))
    assert not aug.OMNIGLOT_AFFINE.train_equals_eval and aug.OMNIGLOT.train_equals_eval
    assert np.all(np.abs(np.asarray(distorted) - np.asarray(x) / 255.0).max(axis=(1, 2, 3)) > 0.1)
    np.testing.assert_allclose(aug.OMNIGLOT_AFFINE.eval(x), x / 255.0, rtol=1e-6)
    # The crop draws the same offsets with and without a distortion after it.
    shift_only = dataclasses.replace(aug.OMNIGLOT, crop_padding=2)
    both = dataclasses.replace(shift_only, affine_degrees=1e-3)
    np.testing.assert_allclose(both.train(rng, x), shift_only.train(rng, x), atol=1e-3)
    assert aug.preset("omniglot_affine") is aug.OMNIGLOT_AFFINE
    with pytest.raises(ValueError, match="affine_scale"):
        aug.ImageTransform(affine_scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="affine_degrees"):
        aug.ImageTransform(affine_degrees=-1.0)
