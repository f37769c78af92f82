"""The frozen-feature cache: equal to recomputed features, and reused only when it applies
(the train step's sampling of the cached views is tested in test_metatrain.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from metaunlab.data import augment
from metaunlab.train import feature_cache


def test_unaugmented_cache_equals_features_recomputed_image_by_image(conv4_toy, conv4_feature_fn,
                                                                     tmp_path):
    images, _, variables = conv4_toy
    cached = feature_cache.load_or_compute(str(tmp_path), conv4_feature_fn, variables, images,
                                           augment.OMNIGLOT, views=0, seed=0)
    one_by_one = np.concatenate([
        np.asarray(conv4_feature_fn(variables, augment.OMNIGLOT.eval(images[i:i + 1])))
        for i in range(len(images))])
    assert cached.shape == (60, 64)
    np.testing.assert_allclose(cached, one_by_one, rtol=1e-5, atol=1e-6)


def test_augmented_views_are_the_transform_applied_with_their_own_keys(conv4_toy, conv4_feature_fn,
                                                                       tmp_path):
    images, _, variables = conv4_toy
    transform = augment.OMNIGLOT_SHIFT
    views = feature_cache.load_or_compute(str(tmp_path), conv4_feature_fn, variables, images,
                                          transform, views=3, seed=7)
    assert views.shape == (60, 3, 64)
    # View 1 recomputed by hand: the training transform under fold_in(PRNGKey(7), 1), one
    # chunk (all 60 images fit in the first chunk, whose key is fold_in(., 0)).
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(7), 1), 0)
    expected = conv4_feature_fn(variables, transform.train(key, jnp.asarray(images)))
    np.testing.assert_allclose(views[:, 1], expected, rtol=1e-5, atol=1e-6)
    # Shifts make the views of one image differ.
    assert not np.allclose(views[:, 0], views[:, 1])


def test_cache_is_reused_and_recomputed_only_when_something_changed(conv4_toy, conv4_feature_fn,
                                                                    tmp_path, monkeypatch):
    images, _, variables = conv4_toy
    calls = []
    real = feature_cache.compute_views

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(feature_cache, "compute_views", counting)

    def load(variables=variables, images=images, seed=0):
        return feature_cache.load_or_compute(str(tmp_path), conv4_feature_fn, variables, images,
                                             augment.OMNIGLOT_SHIFT, views=2, seed=seed)

    first = load()
    np.testing.assert_array_equal(load(), first)
    assert len(calls) == 1  # the second call read the file
    other = jax.tree_util.tree_map(lambda x: x * 1.01, variables)
    load(variables=other)  # another backbone checkpoint
    load(variables=other, seed=1)  # another draw of the views
    load(variables=other, seed=1, images=images[::-1].copy())  # other images
    assert len(calls) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_views2.json",
                                                          "train_views2.npy"]
