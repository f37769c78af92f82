"""Alternative ways of computing the SIB meta-training step, timed against `metaunlab.sib`.

Each variant computes the same function as `sib.loss` (the tests check it) and differs by
one lever, so its speed ratio to `sib` measures that lever:

  unroll        the direct or Gram form of `sib.apply`: the library's own step;
  scan          the K steps as a `lax.scan` instead of a Python loop (direct form);
  autodiff      each step's VJP through the cosine classifier by `jax.vjp`, as the
                reference takes it with torch.autograd, instead of written out (direct);
  phi_autodiff  phi differentiated by autodiff of its Flax module instead of its
                hand-written VJP (either form);
  vmap          episodes by `jax.vmap` of the one-episode step instead of a leading axis,
                phi by autodiff (either form).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import jax
import optax

from metaunlab import _unrolled, sib
from metaunlab import synthetic_gradient as phi
from metaunlab.numerics import cosine_logits, cross_entropy, l2_normalize

INNERS = ("unroll", "scan", "autodiff", "phi_autodiff", "vmap")
# `sib.apply` in each of its two forms (`metaunlab._unrolled`), whatever the batch size.
FORMS = {form: functools.partial(sib._apply_form, form=form) for form in ("direct", "gram")}


@contextlib.contextmanager
def phi_by_autodiff() -> Iterator[None]:
    """While tracing inside this block, `sib` differentiates phi's Flax module by autodiff.

    `sib` calls `synthetic_gradient.apply` when it traces; swapping the module attribute
    changes what a function traced here computes its gradient with, and nothing already
    compiled.
    """
    manual = phi.apply
    phi.apply = phi.apply_autodiff
    try:
        yield
    finally:
        phi.apply = manual


def autodiff_synthetic_step(params: sib.Params, theta: jax.Array, query_hat: jax.Array, *,
                            lr: float) -> jax.Array:
    """`_unrolled.synthetic_step` with the VJP through the cosine classifier taken by `jax.vjp`."""
    logits, vjp = jax.vjp(lambda t: cosine_logits(params["classifier"], t, query_hat), theta)
    (grad_theta,) = vjp(phi.apply(params["grad_net"], logits))
    return theta - lr * grad_theta


def _refine(params: sib.Params, theta: jax.Array, query_feats: jax.Array, *, steps: int,
            lr: float, inner: str) -> jax.Array:
    query_hat = l2_normalize(query_feats)
    if inner == "scan":
        def body(theta, _):
            return _unrolled.synthetic_step(params, theta, query_hat, lr=lr), None

        theta, _ = jax.lax.scan(body, theta, None, length=steps)
        return theta
    if inner != "autodiff":
        raise ValueError(f"no K-step variant {inner!r}; use 'scan' or 'autodiff'")
    for _ in range(steps):
        theta = autodiff_synthetic_step(params, theta, query_hat, lr=lr)
    return theta


def variant_apply(params: sib.Params, support_feats: jax.Array, support_labels: jax.Array,
                  query_feats: jax.Array, *, steps: int = 3, lr: float = 1e-3,
                  inner: str) -> jax.Array:
    """The direct form of `sib.apply` with the K steps of `inner` ("scan" or "autodiff"):
    query logits, with the inputs' leading episode axes."""
    if support_feats.ndim == 3 and support_feats.shape[0] == 1:
        # One episode without its axis, as `sib` passes it.
        return variant_apply(params, support_feats[0], support_labels[0], query_feats[0],
                             steps=steps, lr=lr, inner=inner)[None]
    theta = sib.init_theta(params["init"], support_feats, support_labels, sib.n_way_of(params))
    theta = _refine(params, theta, query_feats, steps=steps, lr=lr, inner=inner)
    return cosine_logits(params["classifier"], theta, query_feats)


def variant_loss(params: sib.Params, support_feats: jax.Array, support_labels: jax.Array,
                 query_feats: jax.Array, query_labels: jax.Array, *, steps: int, lr: float,
                 inner: str = "unroll", form: str = "direct") -> tuple[jax.Array, jax.Array]:
    """`sib.loss` (grad_coeff = 0) computed as variant `inner` of form `form`:
    (mean query cross-entropy, logits (B, Nq, N)) for a batch of B episodes."""
    if inner not in INNERS:
        raise ValueError(f"inner must be one of {', '.join(INNERS)}, got {inner!r}")
    if form not in FORMS:
        raise ValueError(f"form must be 'direct' or 'gram', got {form!r}")
    if inner in ("scan", "autodiff"):
        if form != "direct":
            raise ValueError(f"the {inner} variant is of the direct form only")
        logits = variant_apply(params, support_feats, support_labels, query_feats,
                               steps=steps, lr=lr, inner=inner)
        return cross_entropy(logits, query_labels), logits
    apply = functools.partial(FORMS[form], params, steps=steps, lr=lr)
    if inner == "vmap":
        apply = jax.vmap(apply)
    with phi_by_autodiff() if inner in ("phi_autodiff", "vmap") else contextlib.nullcontext():
        logits = apply(support_feats, support_labels, query_feats)
    return cross_entropy(logits, query_labels), logits


def make_sib_step(optimizer: optax.GradientTransformation, *, steps: int, lr: float = 1e-3,
                  inner: str = "unroll", donate: bool = True,
                  form: str = "direct") -> Callable:
    """Jitted `step(state, fs, ys, fq, yq) -> (state, loss)`: the SIB meta-training step on
    gathered features (B, Ns, D) / (B, Nq, D), with `metatrain.init_state` states."""
    if inner not in INNERS or form not in FORMS or (inner in ("scan", "autodiff")
                                                      and form != "direct"):
        raise ValueError(f"no sib_step variant inner={inner!r} form={form!r}; inner is one of "
                         f"{', '.join(INNERS)} (scan and autodiff of the direct form only), "
                         "form 'direct' or 'gram'.")
    loss_of = functools.partial(variant_loss, steps=steps, lr=lr, inner=inner, form=form)

    def step(state, fs, ys, fq, yq):
        def loss_fn(params):
            return loss_of(params, fs, ys, fq, yq)

        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        return dict(state, step=state["step"] + 1, opt_state=opt_state,
                    params=optax.apply_updates(state["params"], updates)), loss

    return jax.jit(step, donate_argnums=(0,) if donate else ())
