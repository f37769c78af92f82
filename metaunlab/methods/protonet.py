"""Class-mean cosine classifier (ProtoNet-style; inductive).

Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017, with
the cosine similarity of Chen et al. / Gidaris & Komodakis instead of the Euclidean
distance: each class is the mean of its L2-normalised support features and a query is
scored by `scale * cos(query, class mean)`.

This is exactly SIB with K = 0 synthetic-gradient steps, an initialization network
`w = 1`, classifier bias 0 and scale 10 (SIB's initial values): the untrained baseline on
which SIB's learned `w` and synthetic gradients build. Defaults: scale = 10 (it only sets
the softness of the probabilities, never the predicted class).
"""

from __future__ import annotations

import jax

from metaunlab.methods.base import Method, register
from metaunlab.numerics import class_means, l2_normalize


def class_mean_cosine(support_feats: jax.Array, support_labels: jax.Array,
                      query_feats: jax.Array, n_way: int, *, scale: float = 10.0) -> jax.Array:
    """Query probabilities of the class-mean cosine classifier for one episode.

    Args:
      support_feats: (Ns, D) support features.
      support_labels: (Ns,) int labels in [0, n_way).
      query_feats: (Nq, D) query features.
      n_way: the number of classes N (static).
      scale: the cosines' scale; it sets the softness, never the predicted class.

    Returns:
      (Nq, N) query probabilities softmax(scale * cos(query, class mean)).

    References:
      Snell, Swersky & Zemel. Prototypical Networks for Few-shot Learning. NeurIPS 2017.
      https://arxiv.org/abs/1703.05175
    """
    protos = class_means(l2_normalize(support_feats), support_labels, n_way)
    cos = l2_normalize(query_feats) @ l2_normalize(protos).T
    return jax.nn.softmax(scale * cos, axis=-1)


METHOD = register(Method(
    name="protonet_cosine", fn=class_mean_cosine, is_transductive=False,
    paper="Snell et al., Prototypical Networks for Few-shot Learning, NeurIPS 2017 "
          "(cosine variant = SIB with K=0, w=1)"))
