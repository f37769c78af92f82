"""SimpleShot (inductive): centre, L2-normalise, nearest class mean.

Wang, Chao, Weinberger & van der Maaten, "SimpleShot: Revisiting Nearest-Neighbor
Classification for Few-Shot Learning", arXiv:1911.04623, 2019. The "CL2N" variant:
subtract the mean feature of the *base* (training) classes, L2-normalise, then assign each
query to the class whose mean support feature is nearest in Euclidean distance.

Defaults and deviations:
* `base_mean` (D,) is the mean backbone feature over the training split. When it is None
  we centre with the mean of the episode's support features instead (still inductive:
  it uses labeled support data only); the paper always has the base mean.
* SimpleShot is a hard nearest-centroid rule; to return probabilities we take
  `softmax(-temperature * squared distance)` with temperature 10, which never changes the
  predicted class (our choice, not the paper's).

Checked against the authors' code (mileyan/simple_shot @ 5d38fc8, `metric_class_type` of
src/train.py, CL2N, run unchanged): the same prediction for every query of 2000 episodes
(5-way 1/5-shot, balanced and Dirichlet(2) query sets, Omniglot Conv-4 features;
`tests/methods/test_reference_outputs.py` keeps two episodes). Centring with the support
mean instead (`base_mean=None`) scores lower at 1 shot there (docs/baselines.md, "Each
method's deviations, measured"). easyfsl's `SimpleShot` scores by the cosine to the class
mean, close to the authors' code; with feature_normalization=2 alone it is
`protonet_cosine`.
"""

from __future__ import annotations

import jax

from metaunlab.methods.base import Method, centre_and_normalize, register
from metaunlab.numerics import class_means, sq_distances


def simpleshot(support_feats: jax.Array, support_labels: jax.Array, query_feats: jax.Array,
               n_way: int, *, base_mean: jax.Array | None = None,
               temperature: float = 10.0) -> jax.Array:
    """SimpleShot (CL2N) query probabilities for one episode.

    Args:
      support_feats: (Ns, D) support features.
      support_labels: (Ns,) int labels in [0, n_way).
      query_feats: (Nq, D) query features.
      n_way: the number of classes N (static).
      base_mean: (D,) mean feature of the training classes, or None to centre with the
        support mean.
      temperature: the softmax's inverse temperature on squared distances; it never changes
        the predicted class.

    Returns:
      (Nq, N) query probabilities, softmax(-temperature * squared distance to class means).

    References:
      Wang, Chao, Weinberger & van der Maaten. SimpleShot: Revisiting Nearest-Neighbor
      Classification for Few-Shot Learning. arXiv 2019. https://arxiv.org/abs/1911.04623
    """
    support, query = centre_and_normalize(support_feats, query_feats, base_mean)
    protos = class_means(support, support_labels, n_way)
    return jax.nn.softmax(-temperature * sq_distances(query, protos), axis=-1)


METHOD = register(Method(
    name="simpleshot", fn=simpleshot, is_transductive=False, uses_base_mean=True,
    paper="Wang et al., SimpleShot: Revisiting Nearest-Neighbor Classification for "
          "Few-Shot Learning, arXiv 2019"))
