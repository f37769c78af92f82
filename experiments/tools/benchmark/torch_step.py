"""An independent eager PyTorch transcription of the SIB head step, timed beside `sib`."""

from __future__ import annotations

import jax
import numpy as np

from metaunlab import sib

from .cases import INNER_LR, OUTER_LR, Budget, Case, Prepared


def make_torch_sib_step(params: sib.Params, *, steps: int, lr: float = INNER_LR,
                        outer_lr: float = OUTER_LR):
    """(step, tensors): an eager PyTorch SIB head step on one episode, from the JAX `params`.

    Written from the maths, not from the reference code: theta_0 = class means of the
    L2-normalised support features times w; K times z = scale * (cos(query, theta) + bias),
    theta -= lr * (dz/dtheta)^T phi(z), with phi = Linear-ReLU-BN-Linear-ReLU-BN-Linear (BN
    on batch statistics) and the graph kept (second order); then query cross-entropy,
    backward, and SGD with Nesterov momentum 0.9 and weight decay 5e-4.
    `step(fs, ys, fq, yq)` takes torch tensors and returns the loss before the update;
    `tensors` holds the torch parameters ("w", "scale", "bias", "phi") for inspection.
    Raises ImportError without torch.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    def tensor(x):
        return torch.tensor(np.array(x, np.float32))

    way = sib.n_way_of(params)
    grad_net = params["grad_net"]
    hidden = grad_net["dense1"]["kernel"].shape[1]
    phi = nn.Sequential(nn.Linear(way, hidden), nn.ReLU(), nn.BatchNorm1d(hidden),
                        nn.Linear(hidden, hidden), nn.ReLU(), nn.BatchNorm1d(hidden),
                        nn.Linear(hidden, way))
    phi.train()  # BatchNorm on the statistics of the current queries
    with torch.no_grad():
        for index, name in ((0, "dense1"), (3, "dense2"), (6, "dense3")):
            phi[index].weight.copy_(tensor(grad_net[name]["kernel"]).T)  # flax: (in, out)
            phi[index].bias.copy_(tensor(grad_net[name]["bias"]))
        for index, name in ((2, "bn1"), (5, "bn2")):
            phi[index].weight.copy_(tensor(grad_net[name]["scale"]))
            phi[index].bias.copy_(tensor(grad_net[name]["bias"]))
    w = nn.Parameter(tensor(params["init"]["w"]))
    scale = nn.Parameter(tensor(params["classifier"]["scale"]))
    bias = nn.Parameter(tensor(params["classifier"]["bias"]))
    opt = torch.optim.SGD([w, scale, bias, *phi.parameters()], lr=outer_lr, momentum=0.9,
                          weight_decay=5e-4, nesterov=True)

    def step(fs, ys, fq, yq):
        queries = F.normalize(fq, dim=-1, eps=1e-12)

        def logits_of(theta):
            return scale * (queries @ F.normalize(theta, dim=-1, eps=1e-12).T + bias)

        one_hot = F.one_hot(ys, way).to(fs.dtype)
        counts = one_hot.sum(0).clamp_min(1.0)[:, None]
        theta = (one_hot.T @ F.normalize(fs, dim=-1, eps=1e-12)) / counts * w
        for _ in range(steps):
            logits = logits_of(theta)
            (grad_theta,) = torch.autograd.grad(logits, theta, phi(logits), create_graph=True)
            theta = theta - lr * grad_theta
        loss = F.cross_entropy(logits_of(theta), yq)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return step, {"w": w, "scale": scale, "bias": bias, "phi": phi}


def prepare_torch_sib_step(case: Case, budget: Budget) -> Prepared | None:
    """The eager PyTorch step (B = 1) on random episodes, or None when torch is missing.

    Sets torch to one intra-op thread for the rest of the process. The head's operations
    are tiny (75 x 640 by 640 x 5), and on a 2-core CPU torch's default two-thread OpenMP
    pool makes the step erratic whenever anything else runs, the idle XLA thread pool of
    this very process included (docs/benchmark.md, "Figures"). One thread is torch at its
    best here, so the measured ratio is a conservative one.
    """
    del budget
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    step, _ = make_torch_sib_step(sib.init(jax.random.PRNGKey(0), case.way, case.feat_dim),
                                  steps=case.k)
    generator = torch.Generator().manual_seed(0)
    args = (torch.randn(case.way * case.shot, case.feat_dim, generator=generator),
            torch.arange(case.way).repeat_interleave(case.shot),
            torch.randn(case.way * case.query, case.feat_dim, generator=generator),
            torch.arange(case.way).repeat_interleave(case.query))
    device = f"torch {torch.__version__} cpu ({torch.get_num_threads()} thread)"
    return Prepared(case, lambda: step(*args), 1, None, {}, device, block=lambda x: x)
