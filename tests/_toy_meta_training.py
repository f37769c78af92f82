"""Toy features and a short meta-training run on them, for the tests that check an option of
the head is built, meta-trained and refused by export. Not a test module.

Gaussian classes in a small feature space: easy enough that ten meta-training iterations
move every parameter, small enough that a run takes seconds on a CPU.
"""

from __future__ import annotations

import numpy as np

N_CLASSES, PER_CLASS, DIM = 12, 20, 16


def toy_features(n_classes=N_CLASSES, per_class=PER_CLASS, dim=DIM, seed=0, shared_offset=0.0):
    """(features, labels): `per_class` draws around each of `n_classes` random centres.

    `shared_offset` > 0 adds one common vector of that scale to every centre, which crowds the
    classes around one direction as new alphabets crowd the backbone's features.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    if shared_offset:
        centres = centres + shared_offset * np.random.default_rng(seed + 1).normal(size=dim)
    labels = np.repeat(np.arange(n_classes), per_class).astype(np.int32)
    feats = (centres[labels] + 0.7 * rng.normal(size=(len(labels), dim))).astype(np.float32)
    return feats, labels


def meta_train_toy(workdir, shared_offset=0.0, **options):
    """Ten meta-training iterations of 5-way 1-shot episodes on toy features, with the head's
    `options` (e.g. center_features=True) set in the meta-training config; returns the last
    parameters."""
    import ml_collections

    from metaunlab.train import metatrain
    from metaunlab.train.metrics import MetricWriter

    feats, labels = toy_features(shared_offset=shared_offset)
    config = ml_collections.ConfigDict(dict(
        seed=3, iterations=10, batch_size=4, n_way=5, n_shot=1, n_query=3, sib_steps=3,
        inner_lr=1e-3, lr=1e-2, momentum=0.9, weight_decay=5e-4, grad_coeff=0.0, val_every=10,
        log_every=5, checkpoint_every=0, **options))
    writer = MetricWriter(workdir)
    try:
        last, _ = metatrain.meta_train(config, source=feats, train_labels=labels, feat_dim=DIM,
                                       val_feats=None, val_episodes=None,
                                       workdir=f"{workdir}/mt", writer=writer)
    finally:
        writer.close()
    return last
