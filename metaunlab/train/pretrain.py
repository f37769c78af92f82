"""Backbone pretraining on the base classes, as in the SIB reference.

Ordinary classification with a cosine classifier `s * normalize(f) @ normalize_columns(W)`
(W ~ N(0, sqrt(2 / D)), learnable s initialised to 10), SGD with Nesterov momentum and
coupled weight decay, a linear warm-up followed by step decay. The backbone kept is the
one with the best accuracy of the class-mean cosine classifier (SIB with K = 0 at its
initial values) on fixed validation episodes: model selection by the few-shot task, not
by base-class accuracy.

The image batch is split over all devices (`metaunlab.train.parallel`; `config.batch_size` is the
global batch); BatchNorm statistics are those of the whole global batch, so the result does
not depend on the device count. Checkpoints and resumption: `metaunlab.train.train_loop`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

from metaunlab import evaluation
from metaunlab.backbones import Backbone, cast_floats, compute_dtype
from metaunlab.data.augment import ImageTransform
from metaunlab.data.dataset import ImageDataset
from metaunlab.data.episodes import Episodes
from metaunlab.errors import ConfigError
from metaunlab.methods.protonet import METHOD as CLASS_MEAN_COSINE
from metaunlab.numerics import cross_entropy, l2_normalize
from metaunlab.train import optim, parallel
from metaunlab.train.checkpoints import Checkpointer
from metaunlab.train.config_schema import with_defaults
from metaunlab.train.metrics import MetricWriter
from metaunlab.train.train_loop import TrainLoop


def cosine_head_logits(head: dict, feats: jax.Array) -> jax.Array:
    """`scale * normalize(feats) @ normalize_columns(weight)`: (n, D) -> (n, classes)."""
    return head["scale"] * (l2_normalize(feats) @ l2_normalize(head["weight"], axis=0))


def init_state(backbone: Backbone, num_classes: int,
               optimizer: optax.GradientTransformation, seed: int) -> dict[str, Any]:
    """Pretraining state: backbone + cosine head (W ~ N(0, sqrt(2/D)), scale 10)."""
    rng = jax.random.PRNGKey(seed)
    head = {"weight": math.sqrt(2.0 / backbone.feat_dim) * jax.random.normal(
                rng, (backbone.feat_dim, num_classes), jnp.float32),
            "scale": jnp.asarray(10.0, jnp.float32)}
    params = {"backbone": backbone.variables["params"], "head": head}
    # Every leaf gets an explicit dtype: a weakly typed scalar would become strongly typed
    # after the first update and force the jitted step to compile a second time.
    return {"step": jnp.asarray(0, jnp.int32), "params": params,
            "batch_stats": backbone.variables["batch_stats"],
            "opt_state": optimizer.init(params), "rng": jax.random.fold_in(rng, 1),
            "best_accuracy": jnp.asarray(-1.0, jnp.float32)}


def make_train_step(module: nn.Module, transform: ImageTransform,
                    optimizer: optax.GradientTransformation, *,
                    mesh: jax.sharding.Mesh | None = None, backbone_dtype: Any = jnp.float32):
    """The pretraining step: one classification step on a batch of uint8 images,
    augmentation included.

    Args:
      module: the backbone's Flax module.
      transform: the training transform (`transform.train(rng, images)` augments).
      optimizer: the optax optimizer of backbone and cosine classifier.
      mesh: the devices the batch is split over (default: all devices); the state is
        replicated.
      backbone_dtype: the backbone's compute dtype (its parameters, gradients and
        BatchNorm statistics stay float32).

    Returns:
      `train_step(state, images (B, H, W, C) uint8, labels (B,)) -> (state, {"loss",
      "accuracy"})`, jitted with the state donated.
    """
    mesh = parallel.data_mesh() if mesh is None else mesh

    def loss_fn(params, batch_stats, rng, images, labels):
        x = transform.train(rng, images).astype(backbone_dtype)
        variables = {"params": params["backbone"], "batch_stats": batch_stats}
        feats, updates = module.apply(cast_floats(variables, backbone_dtype), x,
                                      train=True, mutable=["batch_stats"])
        feats = feats.astype(jnp.float32)
        updates = cast_floats(updates, jnp.float32)
        logits = cosine_head_logits(params["head"], feats)
        loss = cross_entropy(logits, labels)
        accuracy = 100.0 * jnp.mean(jnp.argmax(logits, -1) == labels)
        return loss, (updates["batch_stats"], accuracy)

    def train_step(state, images, labels):
        rng, step_rng = jax.random.split(state["rng"])
        (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["batch_stats"], step_rng, images, labels)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new_state = {"step": state["step"] + 1,
                     "params": optax.apply_updates(state["params"], updates),
                     "batch_stats": batch_stats, "opt_state": opt_state, "rng": rng,
                     "best_accuracy": state["best_accuracy"]}
        return new_state, {"loss": loss, "accuracy": accuracy}

    replicated, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(train_step, donate_argnums=0, in_shardings=(replicated, batch, batch),
                   out_shardings=(replicated, replicated))


def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def validation_accuracy(backbone: Backbone, variables: Any, images: np.ndarray,
                        episodes: Episodes, transform: ImageTransform) -> float:
    """The class-mean cosine classifier's accuracy on episodes of `images`.

    Args:
      backbone: the backbone.
      variables: its variables.
      images: (N, H, W, C) uint8 images the episodes index.
      episodes: the episodes.
      transform: the image transform; its evaluation form preprocesses.

    Returns:
      The mean accuracy in percent.
    """
    feats = evaluation.embed(backbone.features, variables, images, transform.eval)
    return float(evaluation.evaluate(CLASS_MEAN_COSINE, feats, episodes).accuracies.mean())


def pretrain(config: ml_collections.ConfigDict, backbone: Backbone, train: ImageDataset,
             val_images: np.ndarray, val_episodes: Episodes,
             transform: ImageTransform, workdir: str, writer: MetricWriter) -> Any:
    """Train `backbone` with a cosine classifier on `train`'s classes.

    Resumes from `<workdir>/pretrain/last` if present; the best variables (by validation
    episodes) are kept in `<workdir>/pretrain/best`. With `config.epochs == 0` nothing is
    trained: the backbone must already be in `<workdir>/pretrain/best` (put there by
    `experiments.import_torch`, say); a few-shot method on random weights is never what
    was meant.

    Args:
      config: the `pretrain` config group (missing fields take their defaults).
      backbone: the backbone with its initial variables (`init_backbone`).
      train: the training images and labels.
      val_images: (N, H, W, C) uint8 validation images.
      val_episodes: episodes over `val_images`, scored by the class-mean cosine
        classifier after each validated epoch.
      transform: the image transform (training augmentation and evaluation form).
      workdir: the run's work directory.
      writer: where metrics are logged.

    Returns:
      The backbone variables (`{"params", "batch_stats"}`) best on validation.

    Raises:
      ConfigError: `epochs == 0` without a backbone in `pretrain/best`, or a batch larger
        than the training set.
    """
    config = with_defaults(config, "pretrain")
    directory = os.path.join(workdir, "pretrain")
    if config.epochs == 0:
        best = Checkpointer(os.path.join(directory, "best"))
        if best.latest_step() is None:
            raise ConfigError(f"--config.pretrain.epochs=0 needs a pretrained backbone in "
                              f"{best.directory}, and there is none; set epochs > 0 to "
                              "pretrain, or import one with experiments.import_torch.")
        tqdm.write(f"pretrain: epochs=0, using the backbone in {best.directory}")
        return best.restore(backbone.variables)
    mesh, rows = parallel.batch_mesh(config.batch_size, "--config.pretrain.batch_size")
    backbone_dtype = compute_dtype(config.backbone_dtype,
                                   "--config.pretrain.backbone_dtype")
    steps_per_epoch = len(train) // config.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"--config.pretrain.batch_size={config.batch_size} is larger than the "
                         f"{len(train)} training images; lower --config.pretrain.batch_size.")
    total_steps = config.epochs * steps_per_epoch
    schedule = optim.warmup_then_step(
        config.lr, min(config.warmup_steps, total_steps),
        {epoch * steps_per_epoch: config.decay_factor for epoch in config.decay_epochs})
    optimizer = optim.sgd_nesterov(schedule, momentum=config.momentum,
                                   weight_decay=config.weight_decay)
    train_step = make_train_step(backbone.module, transform, optimizer, mesh=mesh,
                                 backbone_dtype=backbone_dtype)

    def end_of_epoch(done: int) -> bool:
        return done > 0 and done % steps_per_epoch == 0

    loop = TrainLoop(
        "pretrain", directory, total_steps, writer, mesh,
        log_at=lambda done: done % config.log_every == 0 or end_of_epoch(done),
        validate_at=lambda done: end_of_epoch(done) and (
            (done // steps_per_epoch) % config.val_every_epochs == 0 or done == total_steps),
        checkpoint_every=config.checkpoint_every,
        items_per_step=config.batch_size, items="images")
    state = loop.resume(parallel.replicate(
        init_state(backbone, train.num_classes, optimizer, config.seed), mesh))

    def advance(state, step, count):
        del count  # one step per call
        epoch, within = divmod(step, steps_per_epoch)
        order = _epoch_order(config.seed, epoch, len(train))
        batch_rows = order[within * config.batch_size:(within + 1) * config.batch_size]
        local = batch_rows[rows.start:rows.stop]  # this process's part of the batch
        images, labels = parallel.global_batch(
            (train.images[local], train.labels[local]), config.batch_size, mesh)
        return train_step(state, images, labels)

    def backbone_variables(state):
        return {"params": state["params"]["backbone"], "batch_stats": state["batch_stats"]}

    def validate(state):
        # Every process validates on its own device and reaches the same accuracy.
        return {"accuracy": validation_accuracy(
            backbone, parallel.to_local(backbone_variables(state)), val_images, val_episodes,
            transform)}

    loop.run(state, advance, validate=validate, best_of=backbone_variables,
             describe=lambda done: f"epoch {done // steps_per_epoch}",
             log_extra=lambda step: {"lr": float(schedule(step))})
    return loop.best.restore(backbone.variables)
