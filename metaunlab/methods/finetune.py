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
These defaults are not tuned on any episodes.

easyfsl's `TransductiveFinetuning` (sicara/easy-few-shot-learning @ 8023ff4) is another
model: logits -||x - p|| to prototypes initialised at the class means of raw features, no
bias, temperature 1, Adam lr 5e-5 for 25 steps, at which it barely moves (it scores like a
prototype classifier). With each of those choices put into this function it agrees with
easyfsl's on all 2000 episodes of a 5-way 1/5-shot, balanced and Dirichlet(2) check on
Omniglot Conv-4 features. On those episodes the trainable bias costs 1-shot accuracy, and
at 1 shot the fine-tuned classifier ends slightly below its starting one
(`protonet_cosine`); docs/baselines.md ("Each method's deviations, measured") has the
figures.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from metaunlab.methods.base import Method, masked_mean, register
from metaunlab.numerics import class_means, entropy, l2_normalize


def transductive_finetune(support_feats: jax.Array, support_labels: jax.Array,
                          query_feats: jax.Array, n_way: int, *, scale: float = 10.0,
                          lr: float = 1e-3, steps: int = 100,
                          entropy_weight: float = 1.0,
                          query_mask: jax.Array | None = None) -> jax.Array:
    """Query probabilities of the classifier fine-tuned on one episode.

    Args:
      support_feats: (Ns, D) support features.
      support_labels: (Ns,) int labels in [0, n_way).
      query_feats: (Nq, D) query features.
      n_way: the number of classes N (static).
      scale: the logits' scale (10: the starting classifier is the class-mean cosine one).
      lr: Adam's step size.
      steps: full-batch Adam steps (static).
      entropy_weight: the weight of the mean query entropy against the support
        cross-entropy.
      query_mask: (Nq,) bool or None: the real queries of a padded query set.

    Returns:
      (Nq, N) query probabilities after fine-tuning.

    References:
      Dhillon, Chaudhari, Ravichandran & Soatto. A Baseline for Few-Shot Image
      Classification. ICLR 2020. https://arxiv.org/abs/1909.02729
    """
    xs, xq = l2_normalize(support_feats), l2_normalize(query_feats)
    targets = jax.nn.one_hot(support_labels, n_way, dtype=xs.dtype)

    def logits(params, x):
        w, b = params
        return scale * (x @ w.T + b)

    def loss(params):
        ce = -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits(params, xs)), -1))
        ent = masked_mean(entropy(jax.nn.softmax(logits(params, xq))), query_mask)
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
