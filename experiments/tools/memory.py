"""What the memory levers save: XLA's own accounting of a compiled train step
(`python -m experiments.memory`).

`jax.jit(step).lower(...).compile().memory_analysis()` reports the buffers the compiled
program needs; nothing is run, so it is cheap even for WRN-28-10 on a CPU. `temp` is the
scratch space of the step (activations kept for the backward pass, mostly), the quantity
remat and bfloat16 shrink; `arguments` and `outputs` are the inputs and the new state.
Only memory is measured here: speed depends on the accelerator (remat costs roughly one
more forward pass of what it recomputes).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metaunlab import sib
from metaunlab.backbones import get_backbone, init_backbone
from metaunlab.data import augment
from metaunlab.train import metatrain, optim, parallel, pretrain

MiB = 2 ** 20


def _analysis(compiled) -> dict[str, float]:
    stats = compiled.memory_analysis()
    return {"temp_mib": stats.temp_size_in_bytes / MiB,
            "arguments_mib": stats.argument_size_in_bytes / MiB,
            "outputs_mib": stats.output_size_in_bytes / MiB}


def _abstract(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def _episodes(batch: int, n_way: int, n_shot: int, n_query: int) -> dict:
    def ints(shape):
        return jax.ShapeDtypeStruct(shape, jnp.int32)

    return {"support_idx": ints((batch, n_way * n_shot)),
            "support_labels": ints((batch, n_way * n_shot)),
            "query_idx": ints((batch, n_way * n_query)),
            "query_labels": ints((batch, n_way * n_query))}


def sib_step(*, feat_dim: int = 640, batch: int = 8, steps: int = 5, remat: bool = False,
             n_way: int = 5, n_shot: int = 1, n_query: int = 15,
             num_features: int = 38400) -> dict[str, float]:
    """Meta-training step on cached features (the SIB head alone)."""
    optimizer = optim.sgd_nesterov(1e-3)
    state = metatrain.init_state(sib.init(jax.random.PRNGKey(0), n_way, feat_dim), optimizer, 0)
    step = metatrain.make_train_step(optimizer, steps=steps, inner_lr=1e-3, remat=remat,
                                     mesh=parallel.data_mesh(jax.devices()[:1]))
    source = jax.ShapeDtypeStruct((num_features, feat_dim), jnp.float32)
    return _analysis(step.lower(_abstract(state), None, source,
                                _episodes(batch, n_way, n_shot, n_query)).compile())


def image_step(*, backbone: str = "wrn28_10", image_size: int = 80, batch: int = 8,
               steps: int = 5, dtype: Any = jnp.float32, num_images: int = 38400,
               n_way: int = 5, n_shot: int = 1, n_query: int = 15) -> dict[str, float]:
    """Meta-training step on images: augment + frozen backbone forward + SIB head."""
    module, feat_dim = get_backbone(backbone, image_size)
    variables = jax.eval_shape(lambda: module.init(
        jax.random.PRNGKey(0), jnp.zeros((1, image_size, image_size, 3)), train=False))
    optimizer = optim.sgd_nesterov(1e-3)
    state = metatrain.init_state(sib.init(jax.random.PRNGKey(0), n_way, feat_dim), optimizer, 0)
    transform = augment.preset("miniimagenet")
    step = metatrain.make_train_step(
        optimizer, steps=steps, inner_lr=1e-3, backbone_dtype=dtype,
        feature_fn=lambda v, x: module.apply(v, x, train=False), transform=transform,
        mesh=parallel.data_mesh(jax.devices()[:1]))
    stored = jax.ShapeDtypeStruct((num_images, 84, 84, 3), jnp.uint8)
    return _analysis(step.lower(_abstract(state), variables, stored,
                                _episodes(batch, n_way, n_shot, n_query)).compile())


def pretrain_step(*, backbone: str = "wrn28_10", image_size: int = 80, batch: int = 64,
                  remat: bool = False, dtype: Any = jnp.float32,
                  num_classes: int = 64) -> dict[str, float]:
    """Backbone pretraining step (gradients through the backbone)."""
    module, feat_dim = get_backbone(backbone, image_size, remat=remat)
    optimizer = optim.sgd_nesterov(0.1)

    def init_state():
        initial = init_backbone(module, feat_dim, (image_size, image_size, 3), 0)
        return pretrain.init_state(initial, num_classes, optimizer, 0)

    state = jax.eval_shape(init_state)  # shapes only: nothing is allocated
    step = pretrain.make_train_step(module, augment.preset("miniimagenet"), optimizer,
                                    mesh=parallel.data_mesh(jax.devices()[:1]),
                                    backbone_dtype=dtype)
    images = jax.ShapeDtypeStruct((batch, 84, 84, 3), jnp.uint8)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    return _analysis(step.lower(state, images, labels).compile())
