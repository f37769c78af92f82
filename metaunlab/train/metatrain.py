"""Meta-training of the SIB head on a frozen backbone.

One jitted step: gather the episode batch from a device-resident source -> (augment and
embed with the frozen backbone, when the source is images) -> SIB over the batch of episodes
-> mean query cross-entropy -> SGD with Nesterov momentum and coupled weight decay.

The source is either the images themselves (faithful to the reference: features recomputed
on freshly augmented images every episode) or precomputed features. When the training
transform has no randomness the two are the same computation, since the frozen backbone
maps each image to one feature vector.

Devices (`metaunlab.train.parallel`): the episode batch is split over a `data` mesh of all devices
of all processes; the SIB parameters, optimizer state and the source are replicated (each
device holds the whole training set, as each GPU does in the reference).
`config.batch_size` is the global batch and must be a multiple of the device count.

Dispatch: with `steps_per_call` = S > 1 one jitted call runs S meta-training iterations in a
`lax.scan` over S stacked episode batches: the same iterations, in the same order, with the
same RNG draws, minus S - 1 dispatches. Checkpoints, resumption and the loop around the
step: `metaunlab.train.train_loop`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from metaunlab import evaluation, sib
from metaunlab.backbones import cast_floats, compute_dtype
from metaunlab.data.augment import ImageTransform
from metaunlab.data.episodes import Episodes, EpisodeSampler, EpisodeShape
from metaunlab.data.query_sets import QueryDistribution, imbalanced_fits
from metaunlab.errors import ConfigError
from metaunlab.head import Head
from metaunlab.methods.sib_head import sib_method
from metaunlab.train import optim, parallel
from metaunlab.train.config_schema import with_defaults as _with_group_defaults
from metaunlab.train.metrics import MetricWriter
from metaunlab.train.query_schedule import (
    distribution_index,
    query_count_index,
    training_query_counts,
    training_query_distributions,
    training_ways,
    way_index,
)
from metaunlab.train.train_loop import TrainLoop

FeatureFn = Callable[[Any, jax.Array], jax.Array]


def with_defaults(config: ml_collections.ConfigDict | dict) -> ml_collections.ConfigDict:
    """A `metatrain` config group with every field it lacks at its default
    (`config_schema.METATRAIN`)."""
    return _with_group_defaults(config, "metatrain")


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The outer optimizer of `config` (a `metatrain` config group): SGD with Nesterov
    momentum at `lr`, divided by 10 at each iteration of `decay_steps` (none: the
    reference's constant rate)."""
    config = with_defaults(config)
    decay_steps = tuple(config.decay_steps)
    learning_rate = config.lr
    if decay_steps:
        learning_rate = optax.piecewise_constant_schedule(
            config.lr, {int(step): 0.1 for step in decay_steps})
    return optim.sgd_nesterov(learning_rate, momentum=config.momentum,
                              weight_decay=config.weight_decay)


def head_of_config(config: ml_collections.ConfigDict, feat_dim: int) -> Head:
    """The head a `metatrain` config group builds: the reference head, with the power
    transform, then centring, the balanced readout and the equivariant phi where the config
    turns them on."""
    config = with_defaults(config)
    transforms = tuple(name for name, on in (("power", config.power_transform),
                                             ("centering", config.center_features)) if on)
    readout = "balanced" if config.balanced_readout else None
    return Head(config.n_way, feat_dim, transforms, readout, config.phi)


def init_state(params: sib.Params, optimizer: optax.GradientTransformation,
               seed: int) -> dict[str, Any]:
    return {"step": jnp.asarray(0, jnp.int32), "params": params,
            "opt_state": optimizer.init(params), "rng": jax.random.PRNGKey(seed),
            "best_accuracy": jnp.asarray(-1.0, jnp.float32)}


def gather_cached_views(rng: jax.Array, views: jax.Array, idx: jax.Array) -> jax.Array:
    """Features `(*idx.shape, D)` of images `idx` from cached views `(N, M, D)`: one view per
    image and episode, drawn anew each step as the reference draws a new augmentation."""
    view = jax.random.randint(rng, idx.shape, 0, views.shape[1])
    return views[idx, view]


def make_train_step(optimizer: optax.GradientTransformation, *, steps: int, inner_lr: float,
                    grad_coeff: float = 0.0, feature_fn: FeatureFn | None = None,
                    transform: ImageTransform | None = None, mesh: jax.sharding.Mesh | None = None,
                    remat: bool = False, backbone_dtype: Any = jnp.float32,
                    steps_per_call: int = 1, head: Head | None = None):
    """The meta-training step: SIB on a batch of episodes, the mean query cross-entropy
    and one optimizer update.

    The returned `train_step(state, backbone_variables, source, episodes)` reads `source`
    as (N, D) features or (N, M, D) cached augmented views (`feature_cache`) when
    `feature_fn` is None, else as (N, H, W, C) uint8 images that are augmented with
    `transform.train` and embedded by the frozen backbone inside the step. `episodes` is a
    dict of the int32 arrays of an `Episodes` batch (`episodes_as_dict`), split over `mesh`
    along the episode axis; everything else is replicated. Pass a state placed by
    `parallel.replicate`: the step returns it replicated, and an input placed otherwise
    costs one more compilation.

    Args:
      optimizer: the outer optimizer (`make_optimizer`).
      steps: K, the synthetic gradient steps.
      inner_lr: the synthetic step size.
      grad_coeff: the weight of `sib.grad_matching_loss` (0: none, as the reference).
      feature_fn: `feature_fn(variables, images) -> (n, D)`, the frozen backbone, for an
        image source; None for a feature source.
      transform: the training transform for an image source; None for a feature source.
      mesh: the devices the episodes are split over (default: all devices).
      remat: recompute the K SIB steps in the backward pass.
      backbone_dtype: the compute dtype of the frozen backbone's forward pass.
      steps_per_call: S; with S > 1 every array of `episodes` has a leading axis of S
        iterations (episodes then split along axis 1), run in order in one call.
      head: the composition the parameters are of (`head_of_config`); None for the
        reference head.

    Returns:
      The jitted step, state donated: `(state, backbone_variables, source, episodes) ->
      (state, {"loss", "accuracy"})`, the metrics the means over the S iterations.

    Raises:
      ValueError: only one of `feature_fn` and `transform`, or `steps_per_call` < 1.
    """
    if (feature_fn is None) != (transform is None):
        raise ValueError("make_train_step needs both feature_fn and transform, or neither.")
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be at least 1, got {steps_per_call}.")
    mesh = parallel.data_mesh() if mesh is None else mesh

    def episode_features(backbone_variables, rng, source, idx):
        if feature_fn is None and source.ndim == 3:
            return gather_cached_views(rng, source, idx)
        batch = source[idx]  # (B, n, ...) gathered on the device
        if feature_fn is None:
            return batch
        flat = batch.reshape((-1,) + batch.shape[2:])
        feats = feature_fn(cast_floats(backbone_variables, backbone_dtype),
                           transform.train(rng, flat).astype(backbone_dtype))
        # The backbone is frozen: no gradient flows into it (and none is computed).
        feats = jax.lax.stop_gradient(feats).astype(jnp.float32)
        return feats.reshape(idx.shape + feats.shape[-1:])

    def train_step(state, backbone_variables, source, episodes):
        rng, support_rng, query_rng = jax.random.split(state["rng"], 3)
        fs = episode_features(backbone_variables, support_rng, source, episodes["support_idx"])
        fq = episode_features(backbone_variables, query_rng, source, episodes["query_idx"])

        def loss_fn(params):
            composition = head or Head(sib.n_way_of(params), params["init"]["w"].shape[-1])
            return composition.loss(params, fs, episodes["support_labels"], fq,
                                    episodes["query_labels"], steps=steps, lr=inner_lr,
                                    grad_coeff=grad_coeff, remat=remat)

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        accuracy = 100.0 * jnp.mean(jnp.argmax(logits, -1) == episodes["query_labels"])
        new_state = dict(state, step=state["step"] + 1, rng=rng, opt_state=opt_state,
                         params=optax.apply_updates(state["params"], updates))
        return new_state, {"loss": loss, "accuracy": accuracy}

    def train_steps(state, backbone_variables, source, episodes):
        def body(state, one_batch):
            return train_step(state, backbone_variables, source, one_batch)

        state, metrics = jax.lax.scan(body, state, episodes)
        return state, jax.tree_util.tree_map(jnp.mean, metrics)

    replicated = parallel.replicated(mesh)
    batch = parallel.batch_sharded(mesh, axis=0 if steps_per_call == 1 else 1)
    return jax.jit(train_step if steps_per_call == 1 else train_steps, donate_argnums=0,
                   in_shardings=(replicated, replicated, replicated, batch),
                   out_shardings=(replicated, replicated))


def auto_steps_per_call(config_value: int, from_images: bool) -> int:
    """`metatrain.steps_per_call`, with 0 resolved: 10 iterations per call on features, where
    a one-episode step takes well under a millisecond on CPU and dispatch dominates, 1 when
    the backbone runs inside the step (its compute dwarfs the dispatch)."""
    if config_value < 0:
        raise ConfigError(f"--config.metatrain.steps_per_call={config_value} must be >= 0 "
                         "(0 = automatic).")
    if config_value:
        return config_value
    return 1 if from_images else 10


def episodes_as_dict(episodes: Episodes) -> dict[str, np.ndarray]:
    return {"support_idx": episodes.support_idx, "support_labels": episodes.support_labels,
            "query_idx": episodes.query_idx, "query_labels": episodes.query_labels}


def meta_train(config: ml_collections.ConfigDict, *, source: np.ndarray,
               train_labels: np.ndarray, feat_dim: int, val_feats: np.ndarray | None,
               val_episodes: Episodes | None, workdir: str, writer: MetricWriter,
               backbone_variables: Any = None, feature_fn: FeatureFn | None = None,
               transform: ImageTransform | None = None, phase: str = "metatrain",
               train_groups: np.ndarray | None = None) -> tuple[sib.Params, sib.Params]:
    """Meta-train SIB for `config.n_way`-way `config.n_shot`-shot episodes.

    Checkpoints live in `<workdir>/last` and `<workdir>/best`, the head's description in
    `<workdir>/head.json`; a rerun with the same workdir resumes.

    Query sets: `config.query_counts` ("1,5,15") draws the queries per class of each block of
    iterations from that list (`query_count_index`), so phi's BatchNorm and the classifier
    scale are trained on the query-set sizes they will meet; empty means `config.n_query`
    always. `config.query_distribution` ("balanced", "dirichlet:ALPHA" for class-imbalanced
    query sets of the same sizes, or several separated by commas, one drawn per iteration)
    splits them between the classes; imbalanced sets are drawn only at the counts where they
    fit the classes (`imbalanced_fits`), the others stay balanced. `train_groups` (a group
    id per class label, e.g. its alphabet) makes every
    episode draw its classes from one group (`EpisodeSampler`).

    Args:
      config: the `metatrain` config group with `n_way` and `n_shot` set (missing fields
        take their defaults).
      source: (N, D) training features, (N, M, D) cached augmented views, or (N, H, W, C)
        uint8 training images (with `feature_fn` and `transform`).
      train_labels: (N,) class labels of `source`.
      feat_dim: the feature dimension D.
      val_feats: (V, D) validation features, or None for no validation.
      val_episodes: episodes over `val_feats`, or None.
      workdir: the folder of this setting's checkpoints.
      writer: where metrics are logged.
      backbone_variables: the frozen backbone's variables, for an image source.
      feature_fn: the frozen backbone's feature function, for an image source.
      transform: the training transform, for an image source.
      phase: the name metrics are logged under.
      train_groups: one group id per class label, or None.

    Returns:
      (last params, best-on-validation params); without validation episodes, the last
      twice.

    Raises:
      Preempted: the process received SIGTERM; `last` is saved first.
    """
    config = with_defaults(config)
    mesh, rows = parallel.batch_mesh(config.batch_size, "--config.metatrain.batch_size")
    backbone_dtype = compute_dtype(config.backbone_dtype,
                                   "--config.metatrain.backbone_dtype")
    query_counts = training_query_counts(config)
    ways = training_ways(config)
    distributions = training_query_distributions(config)
    smallest_class = int(np.unique(np.asarray(train_labels), return_counts=True)[1].min())
    samplers = {}
    for n_way in ways:
        for q in query_counts:
            usable = [d for d in distributions if d.is_balanced
                      or imbalanced_fits(q, config.n_shot, smallest_class)]
            # A count too large for imbalanced query sets uses balanced ones instead.
            usable = usable or [QueryDistribution()]
            samplers[n_way, q] = [
                EpisodeSampler(train_labels, EpisodeShape(n_way, config.n_shot, q),
                               seed=config.seed, split_name="train", groups=train_groups,
                               query_distribution=d) for d in usable]
    optimizer = make_optimizer(config)
    head = head_of_config(config, feat_dim)
    params = head.init(jax.random.PRNGKey(config.seed), scale=config.init_scale)
    if parallel.is_primary():  # what the checkpoints hold, for whoever reads them back
        os.makedirs(workdir, exist_ok=True)
        head.save(workdir)
    per_call = auto_steps_per_call(config.steps_per_call, feature_fn is not None)
    loop = TrainLoop(
        phase, workdir, config.iterations, writer, mesh,
        log_at=lambda done: done % config.log_every == 0,
        validate_at=(lambda done: val_feats is not None and (
            done % config.val_every == 0 or done == config.iterations)),
        checkpoint_every=config.checkpoint_every,
        items_per_step=config.batch_size, items="episodes", steps_per_call=per_call)
    state = loop.resume(parallel.replicate(init_state(params, optimizer, config.seed), mesh))

    step_kwargs = dict(steps=config.sib_steps, inner_lr=config.inner_lr,
                       grad_coeff=config.grad_coeff, feature_fn=feature_fn, transform=transform,
                       mesh=mesh, remat=config.remat, backbone_dtype=backbone_dtype)
    # jit compiles on first use: the one-iteration step only where a call of `per_call`
    # would cross a log, validation or checkpoint step; one pair per way count.
    train_step = {n: make_train_step(optimizer, head=head.for_ways(n), **step_kwargs)
                  for n in ways}
    train_steps = (train_step if per_call == 1 else
                   {n: make_train_step(optimizer, steps_per_call=per_call,
                                       head=head.for_ways(n), **step_kwargs) for n in ways})
    source = parallel.replicate(np.asarray(source), mesh)
    backbone_variables = parallel.replicate(backbone_variables, mesh)
    val_feats = None if val_feats is None else jnp.asarray(val_feats)

    def shape(step):
        """(ways, queries per class) of iteration `step`."""
        return (ways[way_index(config.seed, step, len(ways))],
                query_counts[query_count_index(config.seed, step, len(query_counts))])

    def sample(step):
        choices = samplers[shape(step)]
        sampler = choices[distribution_index(config.seed, step, len(choices))]
        return episodes_as_dict(sampler.sample(step, len(rows), first_episode=rows.start))

    def advance(state, step, count):
        if count > 1 and len({shape(s) for s in range(step, step + count)}) > 1:
            for s in range(step, step + count):  # a call mixing shapes: one at a time
                state, metrics = advance(state, s, 1)
            return state, metrics  # the last iteration's metrics
        n_way = shape(step)[0]
        if count == 1:
            batch = parallel.global_batch(sample(step), config.batch_size, mesh)
            return train_step[n_way](state, backbone_variables, source, batch)
        local = [sample(s) for s in range(step, step + count)]
        local = {k: np.stack([d[k] for d in local]) for k in local[0]}
        batch = parallel.global_batch(local, config.batch_size, mesh, axis=1)
        return train_steps[n_way](state, backbone_variables, source, batch)

    def validate(state):
        # Every process validates the same episodes on its own first device, so all of
        # them agree on the best accuracy without communicating.
        method = sib_method(parallel.to_local(state["params"]), config.sib_steps,
                            config.inner_lr, head=head)
        result = evaluation.evaluate(method, val_feats, val_episodes)
        return {"accuracy": result.accuracy, "ci95": result.ci95}

    state = loop.run(state, advance, validate=validate, best_of=lambda s: s["params"])
    last = parallel.to_local(state["params"])
    if loop.best.latest_step() is None:
        return last, last
    return last, parallel.to_local(loop.best.restore(state["params"]))


def train_on_features(features: np.ndarray, labels: np.ndarray, *, n_way: int, n_shot: int,
                      n_query: int = 15, steps: int = 3, iterations: int = 2000,
                      batch_size: int = 8, lr: float = 1e-3, inner_lr: float = 1e-3,
                      seed: int = 0, val_features: np.ndarray | None = None,
                      val_labels: np.ndarray | None = None, val_episodes: int = 300,
                      workdir: str | None = None,
                      query_distribution: str = "balanced") -> sib.Params:
    """Meta-train a reference SIB head on features, from Python.

    The reference's outer optimizer: SGD with Nesterov momentum 0.9 and coupled weight
    decay 5e-4.

    Args:
      features: (N, D) training features; labels: (N,) their class labels.
      n_way, n_shot, n_query: the episodes' shape (queries per class).
      steps: K, the synthetic steps; inner_lr: their size.
      iterations: meta-training iterations of `batch_size` random episodes each.
      lr: the outer learning rate.
      seed: seeds the parameters and the episodes.
      val_features, val_labels: validation data, or None; with them the head of the best
        accuracy on `val_episodes` seeded (balanced) episodes is returned.
      workdir: where checkpoints go (a rerun resumes there); None: a temporary folder.
      query_distribution: how each training query set splits between its classes
        ("balanced" or "dirichlet:ALPHA").

    Returns:
      The head's parameters (`metaunlab.sib`), the best on validation or the last.
    """
    config = with_defaults({  # the reference's outer optimizer, as the defaults have it
        "seed": seed, "iterations": iterations, "batch_size": batch_size, "n_way": n_way,
        "n_shot": n_shot, "n_query": n_query, "sib_steps": steps, "inner_lr": inner_lr,
        "lr": lr, "val_every": max(1, iterations // 4), "log_every": max(1, iterations // 10),
        "checkpoint_every": 0, "query_distribution": query_distribution})
    features = np.asarray(features, np.float32)
    val = None
    if val_features is not None:
        shape = EpisodeShape(n_way, n_shot, n_query)
        val = EpisodeSampler(np.asarray(val_labels), shape, seed=seed + 1,
                             split_name="val").sample(0, val_episodes)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory())
        _, best = meta_train(config, source=features, train_labels=np.asarray(labels),
                             feat_dim=features.shape[1], val_feats=val_features,
                             val_episodes=val, workdir=workdir,
                             writer=MetricWriter(workdir, enabled=False))
    return best
