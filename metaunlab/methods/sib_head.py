"""SIB as a `Method`: a trained SIB head (the computation itself is `metaunlab.sib`).

Hu et al., "Empirical Bayes Transductive Meta-Learning with Synthetic Gradients", ICLR
2020. `sib_method(params, steps, lr, head=head)` wraps meta-trained parameters of a
`metaunlab.head.Head` (the reference head when none is given); its probabilities are the
softmax of `Head.apply` logits after K = `steps` synthetic-gradient steps. K = 0 is the
learned initialization network alone, inductive unless a part of the head reads the
queries (`Head.k0_reads_queries`); K > 0 is transductive (the synthetic-gradient network
reads the query logits, and its BatchNorm uses query statistics). The published setting is
K = 3, lr = 1e-3. The method takes leading episode axes itself, so a batch of episodes
runs as one call.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp

from metaunlab import sib
from metaunlab.head import Head
from metaunlab.methods.base import Method

PAPER = ("Hu et al., Empirical Bayes Transductive Meta-Learning with Synthetic Gradients, "
         "ICLR 2020")


@functools.cache
def _probabilities(head: Head, steps: int, lr: float, scaled: bool = False,
                   readout: bool | None = None):
    """The method function of `head` for (steps, lr); cached, so that every head of the
    same composition, K and step size shares one compiled predictor (`Method.predictor`).
    With `scaled`
    its params are `{"head": SIB params, "step_scales": StepScales.table()}` and each
    episode's step is multiplied by the scale of its query count, a traced input: every
    scale of a search shares one compilation too."""
    def fn(support_feats, support_labels, query_feats, n_way, *, params, query_mask=None):
        head_params = params["head"] if scaled else params
        if n_way != head.n_way:
            raise ValueError(f"this SIB head was meta-trained for {head.n_way}-way "
                             f"episodes, not {n_way}-way")
        queries = (query_feats.shape[-2] if query_mask is None
                   else jnp.sum(query_mask, axis=-1).astype(query_feats.dtype))
        step = lr
        if scaled:
            step = step * scale_of_table(params["step_scales"], queries / n_way)
        logits = head.apply(head_params, support_feats, support_labels, query_feats,
                            steps=steps, lr=step, query_mask=query_mask, readout=readout)
        return jax.nn.softmax(logits, axis=-1)

    return fn


def scale_of_table(table: dict[str, jax.Array], queries_per_class) -> jax.Array:
    """The step multiple at `queries_per_class` (a number or an array over episodes) of a
    `StepScales.table()`: piecewise linear in log-log between its query counts, constant
    beyond the first and the last."""
    log_q = jnp.log(jnp.asarray(queries_per_class, jnp.float32))
    return jnp.exp(jnp.interp(log_q, table["log_counts"], table["log_scales"]))


@dataclasses.dataclass(frozen=True)
class StepScales:
    """Multiples of a head's trained synthetic step size, by queries per class.

    `queries_per_class` increasing, `scales` positive, one per count; between two counts
    the multiple is interpolated linearly in log(count) and log(scale), and beyond the ends
    it is that of the nearest end (`scale_at`). Chosen on validation episodes by
    `metaunlab.research.step_tuning.tune_step_scales`.
    """

    queries_per_class: tuple[float, ...]
    scales: tuple[float, ...]

    def __post_init__(self):
        counts, scales = tuple(self.queries_per_class), tuple(self.scales)
        if not counts or len(counts) != len(scales):
            raise ValueError(f"StepScales needs one scale per query count, got {counts} and "
                             f"{scales}")
        if any(b <= a for a, b in itertools.pairwise(counts)) or min(counts) <= 0:
            raise ValueError(f"StepScales query counts must be positive and increasing: "
                             f"{counts}")
        if min(scales) <= 0:
            raise ValueError(f"StepScales scales must be positive: {scales}")

    def table(self) -> dict[str, jax.Array]:
        """The traced form `sib_method` passes to its function."""
        return {"log_counts": jnp.log(jnp.asarray(self.queries_per_class, jnp.float32)),
                "log_scales": jnp.log(jnp.asarray(self.scales, jnp.float32))}

    def scale_at(self, queries_per_class: float) -> float:
        return float(scale_of_table(self.table(), queries_per_class))


def sib_method(params: sib.Params, steps: int, lr: float = 1e-3,
               name: str | None = None,
               step_scales: StepScales | None = None, readout: bool | None = None, *,
               head: Head | None = None) -> Method:
    """A trained SIB head with K = `steps` synthetic steps of size `lr` as a `Method`.

    Args:
      params: the head's parameters.
      steps: K.
      lr: the synthetic step size.
      name: the method's name; `sib_k<steps>` by default.
      step_scales: None (the reference), or multiples of that step by each episode's number
        of queries per class (`StepScales`).
      readout: as in `Head.apply`; None reads a head with a readout out with it at K > 0
        only.
      head: the head's composition (`TrainedModel.head`); None for the reference head.
        Parameters with entries the head does not list are refused.

    Returns:
      A transductive `Method` where K > 0 or the head reads the queries at K = 0.

    References:
      Hu, Moreno, Xiao, Shen, Obozinski, Lawrence & Damianou. Empirical Bayes Transductive
      Meta-Learning with Synthetic Gradients. ICLR 2020. https://arxiv.org/abs/2004.12696
    """
    if head is None:
        head = Head(sib.n_way_of(params), int(params["init"]["w"].shape[-1]))
    head.check(params)
    reads_out = (readout if readout is not None
                 else steps > 0 and head.readout is not None)
    fn = _probabilities(head, int(steps), float(lr), step_scales is not None, readout)
    if step_scales is not None:
        params = {"head": params, "step_scales": step_scales.table()}
    return Method(name=name or f"sib_k{steps}", fn=fn, is_transductive=steps > 0 or reads_out,
                  paper=PAPER, params=params, episode_axes=True)
