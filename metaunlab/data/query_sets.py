"""How an episode's query set is split between its classes: balanced, or Dirichlet.

Veilleux, Boudiaf, Piantanida & Ben Ayed, "Realistic Evaluation of Transductive Few-Shot
Learning", NeurIPS 2021: real unlabeled data is not balanced, so the class proportions of
a query set are drawn from a symmetric Dirichlet with concentration alpha (alpha = 2 is
their standard) and turned into integer counts with a fixed total.

    QueryDistribution.parse("balanced")      every class total / n_way queries
    QueryDistribution.parse("dirichlet:2")   proportions ~ Dir(2, ..., 2), counts sum to total

`dirichlet_counts` is the authors' rounding (their `convert_prob_to_samples`): round every
count; while the sum is off, take the count whose fractional part is closest to 1/2 (first
on ties), floor it when the sum is too large, ceil it when too small. Counts of 0 are
allowed: an absent class is part of the setting.

One deviation: the authors' sampler takes `randperm(len(class))[:count]`, so a count larger
than the class silently gets the whole class, and their queries may repeat support images.
Episodes here keep support and queries disjoint and never exceed a class: a draw with a
count above a class's remaining images is redrawn (a Dirichlet conditioned on fitting).
On miniImageNet (600 images per class) this never binds; on Omniglot (20 drawings per
character) it binds unless the total is small, so Omniglot settings use 5 queries per
class on average (25 for 5-way).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from metaunlab.data.errors import DataError

# Redraws of a Dirichlet sample whose counts do not fit the classes, before giving up.
MAX_REDRAWS = 1000


@dataclasses.dataclass(frozen=True)
class QueryDistribution:
    """How a query set's total splits between its classes.

    Attributes:
      kind: "balanced" or "dirichlet".
      alpha: the Dirichlet concentration (> 0); None for "balanced".

    Raises:
      DataError: an unknown kind, or an alpha that does not fit the kind.

    References:
      Veilleux, Boudiaf, Piantanida & Ben Ayed. Realistic Evaluation of Transductive
      Few-Shot Learning. NeurIPS 2021. https://arxiv.org/abs/2204.11181
    """

    kind: str = "balanced"
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "balanced":
            if self.alpha is not None:
                raise DataError("a balanced query distribution takes no alpha.")
        elif self.kind == "dirichlet":
            if self.alpha is None or not np.isfinite(self.alpha) or self.alpha <= 0:
                raise DataError(f"dirichlet needs a positive concentration alpha, got "
                                f"{self.alpha!r}; write e.g. 'dirichlet:2'.")
        else:
            raise DataError(f"unknown query distribution {self.kind!r}; use 'balanced' or "
                            "'dirichlet:ALPHA' (e.g. 'dirichlet:2').")

    @classmethod
    def parse(cls, spec: str | QueryDistribution) -> QueryDistribution:
        """The distribution a spec names.

        Args:
          spec: "balanced" or "dirichlet:ALPHA" (case and surrounding spaces ignored), or a
            `QueryDistribution`, returned as it is.

        Returns:
          The `QueryDistribution`.

        Raises:
          DataError: the spec is neither form.
        """
        if isinstance(spec, QueryDistribution):
            return spec
        text = str(spec).strip().lower()
        if text == "balanced":
            return cls("balanced")
        kind, sep, alpha = text.partition(":")
        if kind == "dirichlet" and sep:
            try:
                value = float(alpha)
            except ValueError:
                value = None
            if value is not None:
                return cls("dirichlet", value)
        raise DataError(f"query distribution {spec!r} is not 'balanced' or 'dirichlet:ALPHA' "
                        "with a positive number ALPHA (e.g. 'dirichlet:2').")

    @property
    def name(self) -> str:
        """The spec it parses from: "balanced", "dirichlet:2", "dirichlet:0.5"."""
        return "balanced" if self.kind == "balanced" else f"dirichlet:{self.alpha:g}"

    @property
    def is_balanced(self) -> bool:
        """Whether every class gets the same number of queries (up to a remainder)."""
        return self.kind == "balanced"

    def counts(self, rng: np.random.Generator, n_way: int, total: int,
               capacity: np.ndarray | int) -> np.ndarray:
        """Queries per class for one episode.

        Balanced: total // n_way each, the remainder to randomly chosen classes (none when
        n_way divides total, and then no random numbers are drawn). Dirichlet: the
        authors' draw and rounding, redrawn while a count does not fit.

        Args:
          rng: the episode's random generator.
          n_way: the number of classes.
          total: the number of queries of the episode.
          capacity: (n_way,) or one int: the images each class has left after its support.

        Returns:
          (n_way,) int64 counts summing to `total`, none above `capacity`.

        Raises:
          DataError: the queries do not fit the classes (after `MAX_REDRAWS` Dirichlet
            draws).
        """
        capacity = np.broadcast_to(np.asarray(capacity), (n_way,))
        if int(capacity.sum()) < total:
            raise DataError(f"{total} queries do not fit in {n_way} classes with "
                            f"{int(capacity.sum())} images left after the support; lower the "
                            "number of queries.")
        if self.is_balanced:
            counts = np.full(n_way, total // n_way, np.int64)
            if total % n_way:
                counts[rng.choice(n_way, size=total % n_way, replace=False)] += 1
            if np.any(counts > capacity):
                raise DataError(f"balanced query sets of {total} queries need "
                                f"{int(counts.max())} images per class after the support; a "
                                f"class has {int(capacity.min())}. Lower the number of queries.")
            return counts
        for _ in range(MAX_REDRAWS):
            counts = dirichlet_counts(rng.dirichlet(np.full(n_way, self.alpha)), total)
            if np.all(counts <= capacity):
                return counts
        raise DataError(f"in {MAX_REDRAWS} Dirichlet({self.alpha:g}) draws of {total} queries "
                        f"over {n_way} classes none fit classes of {int(capacity.min())} images "
                        "after the support; lower the number of queries per class.")


def imbalanced_fits(n_query: int, n_shot: int, images_per_class: int) -> bool:
    """Whether class-imbalanced query sets can be drawn at `n_query` queries per class.

    They can when the queries average at most half of the images a class has left after
    its support, so a class that a Dirichlet draw makes twice as frequent as average still
    fits. Above that only a near-balanced draw fits (the sampler redraws until one does),
    which is no imbalance.

    Args:
      n_query: queries per class on average.
      n_shot: support images per class.
      images_per_class: images each class holds.

    Returns:
      True when 2 * n_query <= images_per_class - n_shot.
    """
    return 2 * n_query <= images_per_class - n_shot


def dirichlet_counts(proportions: np.ndarray, total: int) -> np.ndarray:
    """Integer counts from class proportions, by the authors' rounding (module docstring).

    Args:
      proportions: (n_way,) class proportions summing to 1.
      total: the sum the counts must have.

    Returns:
      (n_way,) int64 counts summing to `total`.
    """
    scaled = np.asarray(proportions, np.float64) * total
    counts = np.round(scaled)
    excess = int(counts.sum()) - total
    if excess:
        # Every adjustment makes its entry an integer, whose fractional part (0) is then the
        # farthest from 1/2; so the authors' loop visits the entries in this order.
        order = np.argsort(np.abs(scaled % 1.0 - 0.5), kind="stable")
        adjust = np.floor if excess > 0 else np.ceil
        for j in order:
            counts[j] = adjust(scaled[j])
            if int(counts.sum()) == total:
                break
    return counts.astype(np.int64)
