"""The outer optimizer of the SIB reference: SGD, Nesterov momentum, coupled weight decay."""

from __future__ import annotations

import optax


def sgd_nesterov(learning_rate: float | optax.Schedule, *, momentum: float = 0.9,
                 weight_decay: float = 5e-4) -> optax.GradientTransformation:
    """`torch.optim.SGD(lr, momentum, weight_decay, nesterov=True)`, update for update.

    torch adds `weight_decay * param` to the gradient *before* the momentum buffer (coupled
    decay, unlike AdamW), then uses buf = m * buf + g and steps along g + m * buf. optax's
    `add_decayed_weights` followed by `sgd(nesterov=True)` computes exactly that.
    """
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(learning_rate, momentum=momentum, nesterov=True),
    )


def warmup_then_step(peak: float, warmup_steps: int, boundaries_and_scales: dict[int, float]
                     ) -> optax.Schedule:
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then piecewise-constant decay.

    The reference pretraining warms up to 0.1 over 6000 iterations and multiplies by 0.1 at
    epoch 50; `boundaries_and_scales` is in iterations, counted from step 0.
    """
    warmup = optax.linear_schedule(0.0, peak, max(warmup_steps, 1))
    decay = optax.piecewise_constant_schedule(peak, {
        max(step - warmup_steps, 0): scale for step, scale in boundaries_and_scales.items()})
    return optax.join_schedules([warmup, decay], [warmup_steps])
