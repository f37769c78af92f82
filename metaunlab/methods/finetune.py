"""Transductive fine-tuning with query entropy (transductive).

Dhillon, Chaudhari, Ravichandran & Soatto, "A Baseline for Few-Shot Image
Classification", ICLR 2020. A linear classifier on L2-normalised features is initialised
from the support ("support-based initialization": weights = normalised class means, bias
0) and fine-tuned on

    mean CE(support) + mean over queries of the Shannon entropy of p(y | query)

with equal weights and Adam, so that the unlabeled queries pull the decision boundaries
into low-density regions.

Deviations (the paper fine-tunes the *whole backbone* with BatchNorm; here the backbone
is frozen and only the classifier moves):
* logits = scale * (normalise(x) @ W.T + b) with scale 10 (our choice; SIB's and the
  pretraining classifier's scale) so that the initial classifier is the class-mean cosine
  classifier rather than near-uniform;
* Adam with lr 1e-3 for 100 full-batch steps (the paper: lr 5e-5, 25 epochs on the full
  network; with only the classifier trainable that would barely move it).
These defaults were fixed before any benchmark run, not tuned on test episodes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from metaunlab.methods.base import Method, register
from metaunlab.numerics import class_means, entropy, l2_normalize


def transductive_finetune(support_feats: jax.Array, support_labels: jax.Array,
                          query_feats: jax.Array, n_way: int, *, scale: float = 10.0,
                          lr: float = 1e-3, steps: int = 100,
                          entropy_weight: float = 1.0) -> jax.Array:
    xs, xq = l2_normalize(support_feats), l2_normalize(query_feats)
    targets = jax.nn.one_hot(support_labels, n_way, dtype=xs.dtype)

    def logits(params, x):
        w, b = params
        return scale * (x @ w.T + b)

    def loss(params):
        ce = -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits(params, xs)), -1))
        ent = jnp.mean(entropy(jax.nn.softmax(logits(params, xq))))
        return ce + entropy_weight * ent

    optimizer = optax.adam(lr)
    params = (l2_normalize(class_means(xs, support_labels, n_way)),
              jnp.zeros((n_way,), xs.dtype))

    def step(carry, _):
        params, opt_state = carry
        updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    return jax.nn.softmax(logits(params, xq), axis=-1)


METHOD = register(Method(
    name="transductive_ft", fn=transductive_finetune, is_transductive=True,
    paper="Dhillon et al., A Baseline for Few-Shot Image Classification, ICLR 2020"))
