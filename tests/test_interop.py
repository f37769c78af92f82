"""Parity with the PyTorch reference: converters, .pth readers, the import CLI.

The PyTorch networks below are an independent transcription of the reference maths (Conv-4-64,
the pre-activation WRN-28-10 and the SIB head with K synthetic-gradient steps through
`torch.autograd.grad(create_graph=True)`), with the reference's state-dict names. Weights are
random with non-trivial BatchNorm statistics; everything is float32. Tests that need torch
skip themselves when it is not installed.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaunlab import optim, sib
from metaunlab.backbones import Conv4, WideResNet, get_backbone
from metaunlab.interop import (
    PthError,
    UnsafePickleError,
    backbone_from_torch,
    backbone_to_torch,
    conv4_torch_feature_order,
    load_pth,
    sib_from_torch,
    sib_to_torch,
    split_checkpoint,
)
from tests._support import run_evaluate_cli, write_reference_layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARITY_TOL = 1e-4


def _rel_err(a, b) -> float:
    """max |a - b| / max |b|: the error relative to the scale of the reference tensor."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _assert_close(name, got, want, tol=PARITY_TOL):
    err = _rel_err(got, want)
    print(f"parity {name}: max relative error {err:.2e}")
    assert np.shape(got) == np.shape(want), (name, np.shape(got), np.shape(want))
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol}"


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


# --------------------------------------------------------------------------------------------
# the independent PyTorch transcription
# --------------------------------------------------------------------------------------------


@functools.cache
def _reference_nets(torch):
    nn, F = torch.nn, torch.nn.functional

    class ConvBlock(nn.Module):
        """3x3 conv (padding 1, no bias) -> BN -> ReLU -> 2x2 max-pool."""

        def __init__(self, cin, cout):
            super().__init__()
            self.layers = nn.Sequential(collections.OrderedDict([
                ("Conv", nn.Conv2d(cin, cout, 3, padding=1, bias=False)),
                ("BatchNorm", nn.BatchNorm2d(cout)),
                ("ReLU", nn.ReLU()),
                ("MaxPool", nn.MaxPool2d(2, 2)),
            ]))

        def forward(self, x):
            return self.layers(x)

    class Conv4T(nn.Module):
        def __init__(self, cin=3):
            super().__init__()
            self.conv_blocks = nn.Sequential(*[ConvBlock(cin if i == 0 else 64, 64)
                                               for i in range(4)])

        def forward(self, x):  # NCHW -> (N, C*H*W), flattened in C, H, W order
            return self.conv_blocks(x).reshape(x.shape[0], -1)

    class PreActBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin)
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.widens = cin != cout
            if self.widens:
                self.convShortcut = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

        def forward(self, x):
            if self.widens:
                x = F.relu(self.bn1(x))
                out = self.conv1(x)
            else:
                out = self.conv1(F.relu(self.bn1(x)))
            out = self.conv2(F.relu(self.bn2(out)))
            return (self.convShortcut(x) if self.widens else x) + out

    class Group(nn.Module):
        def __init__(self, n, cin, cout, stride):
            super().__init__()
            self.layer = nn.Sequential(*[PreActBlock(cin if j == 0 else cout, cout,
                                                     stride if j == 0 else 1)
                                         for j in range(n)])

        def forward(self, x):
            return self.layer(x)

    class WRNT(nn.Module):
        def __init__(self, first_stride):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.block1 = Group(4, 16, 160, first_stride)
            self.block2 = Group(4, 160, 320, 2)
            self.block3 = Group(4, 320, 640, 2)
            self.bn1 = nn.BatchNorm2d(640)

        def forward(self, x):
            out = self.block3(self.block2(self.block1(self.conv1(x))))
            out = F.relu(self.bn1(out))
            return F.avg_pool2d(out, out.shape[-1]).reshape(x.shape[0], -1)

    class Diagonal(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

    class GradNet(nn.Module):
        def __init__(self, n):
            super().__init__()
            h = 8 * n
            self.layer1 = nn.Sequential(nn.Linear(n, h), nn.ReLU(), nn.BatchNorm1d(h))
            self.layer2 = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.BatchNorm1d(h))
            self.layer3 = nn.Linear(h, n)

        def forward(self, z):
            return self.layer3(self.layer2(self.layer1(z)))

    class SIBT(nn.Module):
        """theta0 = mean_c(normalize(f_s)) * w; K times theta -= lr * (dz/dtheta)^T phi(z);
        logits z = scale * (normalize(f_q) normalize(theta)^T + bias)."""

        def __init__(self, n_way, feat_dim):
            super().__init__()
            self.n_way = n_way
            self.bias = nn.Parameter(torch.zeros(1))
            self.scale_cls = nn.Parameter(torch.full((1,), 10.0))
            self.wnLayerFavg = Diagonal(feat_dim)
            self.dni = GradNet(n_way)

        def logits(self, theta, fq):
            cos = F.normalize(fq, dim=-1) @ F.normalize(theta, dim=-1).t()
            return self.scale_cls * (cos + self.bias)

        def forward(self, fs, ys, fq, steps, lr):
            onehot = F.one_hot(ys, self.n_way).to(fs.dtype)  # (Ns, N)
            means = (onehot.t() @ F.normalize(fs, dim=-1)) / onehot.sum(0)[:, None]
            theta = means * self.wnLayerFavg.weight
            for _ in range(steps):
                z = self.logits(theta, fq)
                (grad,) = torch.autograd.grad([z], [theta], grad_outputs=[self.dni(z)],
                                              create_graph=True)
                theta = theta - lr * grad
            return self.logits(theta, fq)

    return {"conv4": Conv4T, "wrn": WRNT, "sib": SIBT}


def _randomize_bn(torch, module, seed):
    """Non-trivial affine parameters and running statistics for every BatchNorm."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return module


def _reference_init_convs(torch, module, seed):
    """The reference's conv init: normal, std sqrt(2 / (k * k * out_channels))."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2 / fan_out) ** 0.5)
    return module


def _numpy_state(module):
    return collections.OrderedDict((k, v.detach().cpu().numpy().copy())
                                   for k, v in module.state_dict().items())


def _torch_sib(torch, n_way, feat_dim, seed):
    torch.manual_seed(seed)
    net = _reference_nets(torch)["sib"](n_way, feat_dim)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.bias.fill_(0.2)
        net.scale_cls.fill_(7.3)
        net.wnLayerFavg.weight.copy_(1 + 0.3 * torch.randn(feat_dim, generator=gen))
    return _randomize_bn(torch, net, seed + 1)


def _episode(seed, n_way, n_shot, n_query, dim):
    rng = np.random.default_rng(seed)
    ys = np.repeat(np.arange(n_way), n_shot)
    yq = np.repeat(np.arange(n_way), n_query)
    centres = rng.normal(size=(n_way, dim))
    fs = centres[ys] + 0.8 * rng.normal(size=(len(ys), dim))
    fq = centres[yq] + 0.8 * rng.normal(size=(len(yq), dim))
    return fs.astype(np.float32), ys, fq.astype(np.float32), yq


# --------------------------------------------------------------------------------------------
# backbones: feature parity
# --------------------------------------------------------------------------------------------


def test_conv4_features_match_reference(torch):
    net = _reference_nets(torch)["conv4"]()
    _randomize_bn(torch, _reference_init_convs(torch, net, 0), 1).eval()
    # 15 images, the batch of the end-to-end test below (so XLA compiles the convs once).
    x = np.random.default_rng(0).normal(size=(15, 3, 80, 80)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    variables = backbone_from_torch("conv4", _numpy_state(net))
    got = np.asarray(Conv4().apply(variables, x.transpose(0, 2, 3, 1), train=False))
    perm = conv4_torch_feature_order(got.shape[1])
    assert got.shape == (15, 1600)
    _assert_close("conv4 features (80 px)", got, want[:, perm])
    # The flatten orders really differ: without the permutation the features disagree.
    assert _rel_err(got, want) > 0.1


def test_conv4_feature_order_is_the_nchw_to_nhwc_flatten():
    x = np.arange(2 * 4 * 3 * 3).reshape(2, 4, 3, 3)  # N, C, H, W
    perm = conv4_torch_feature_order(36, channels=4)
    np.testing.assert_array_equal(x.reshape(2, -1)[:, perm],
                                  x.transpose(0, 2, 3, 1).reshape(2, -1))
    with pytest.raises(ValueError, match="square"):
        conv4_torch_feature_order(100)


def test_wrn28_10_features_match_reference(torch):
    """32 px, strides (1, 2, 2) as for CIFAR-FS: every kind of block, stride-2 convs included."""
    net = _reference_nets(torch)["wrn"](1)
    _randomize_bn(torch, _reference_init_convs(torch, net, 2), 3).eval()
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    variables = backbone_from_torch("wrn28_10", _numpy_state(net))
    module = WideResNet(strides=(1, 2, 2))
    got = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(
        variables, x.transpose(0, 2, 3, 1)))
    assert got.shape == (2, 640)
    _assert_close("wrn28_10 features (32 px)", got, want)


def test_wrn28_10_80px_shapes():
    """80 px with strides (2, 2, 2), as for miniImageNet: 80 -> 40 -> 20 -> 10, 640 features
    (shapes only; the numbers of the same convolutions are checked at 32 px)."""
    module, feat_dim = get_backbone("wrn28_10", 80)
    assert module.strides == (2, 2, 2) and feat_dim == 640
    out, variables = jax.eval_shape(lambda: module.init_with_output(
        jax.random.PRNGKey(0), jnp.zeros((3, 80, 80, 3)), train=False))
    assert out.shape == (3, 640)
    # The weights do not depend on the strides: a 32 px conversion fits the 80 px network.
    shapes = jax.tree_util.tree_map(lambda a: a.shape, variables)
    assert shapes == jax.tree_util.tree_map(np.shape, _flax_variables("wrn28_10"))


# --------------------------------------------------------------------------------------------
# the SIB head: logits and meta-gradients
# --------------------------------------------------------------------------------------------

# The published synthetic step size is 1e-3 (every K and shot); 0.05 makes the K steps move
# theta much further, so that a mistake in phi or in the vector-Jacobian product cannot hide.
SIB_CASES = [(k, shot, 1e-3) for k in (0, 1, 3, 5) for shot in (1, 5)] + [
    (1, 1, 5e-2), (5, 1, 5e-2), (5, 5, 5e-2)]


def _sib_reference_run(torch, steps, n_shot, lr, dtype):
    """Reference logits, loss and parameter gradients, and the converted parameters."""
    n_way, dim = 5, 32
    net = _torch_sib(torch, n_way, dim, seed=10 + n_shot).train().to(dtype)  # phi: batch stats
    fs, ys, fq, yq = _episode(n_shot, n_way, n_shot, 15, dim)
    logits = net(torch.from_numpy(fs).to(dtype), torch.from_numpy(ys),
                 torch.from_numpy(fq).to(dtype), steps, lr)
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(yq))
    loss.backward()
    grads = {n: None if p.grad is None else p.grad.numpy() for n, p in net.named_parameters()}
    return (fs, ys, fq, yq), net, logits.detach().numpy(), loss.detach().numpy(), grads


@pytest.mark.parametrize("steps,n_shot,lr", SIB_CASES)
def test_sib_logits_and_gradients_match_reference(torch, steps, n_shot, lr):
    (fs, ys, fq, yq), net, logits_t, loss_t, grads_t = _sib_reference_run(
        torch, steps, n_shot, lr, torch.float32)
    params = sib_from_torch(_numpy_state(net))

    def loss_fn(p):
        return sib.loss(p, fs, ys, fq, yq, steps=steps, lr=lr)

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    tag = f"K={steps} {n_shot}-shot lr={lr:g}"
    _assert_close(f"sib logits {tag}", logits, logits_t)
    _assert_close(f"sib loss {tag}", loss, loss_t)
    torch_grads = sib_to_torch(grads)
    worst = 0.0
    for name, grad_t in grads_t.items():
        if steps == 0 and name.startswith("dni."):
            assert grad_t is None  # phi is not used at all with K = 0
            np.testing.assert_array_equal(torch_grads[name], 0)
            continue
        if steps == 0 and name == "bias":
            # Exactly 0 in exact arithmetic (a shift of every logit leaves the softmax
            # unchanged): both sides are rounding noise, so compare absolutely.
            assert max(abs(float(torch_grads[name][0])), abs(float(grad_t[0]))) < 1e-5
            continue
        # d loss / d bias is a sum of many cancelling terms. With the large stress step size
        # each float32 implementation alone is ~1e-4 away from the float64 value (the float64
        # test below agrees to 1e-10), so only there the float32 bound is looser.
        tol = 5e-4 if (name == "bias" and lr > 1e-2) else PARITY_TOL
        err = _rel_err(torch_grads[name], grad_t)
        assert err <= tol, f"d loss / d {name} ({tag}): relative error {err:.3e}"
        worst = max(worst, err)
    print(f"parity sib gradients {tag}: max relative error over all parameters {worst:.2e}")
    if steps:  # the steps matter: K steps change the logits
        logits0 = sib.apply(params, fs, ys, fq, steps=0, lr=lr)
        assert _rel_err(logits, logits0) > (1e-4 if lr < 1e-2 else 1e-2)


# torch parameter name -> (path in the SIB params, torch layout to Flax layout)
_SIB_NAMES = {
    "bias": (("classifier", "bias"), lambda a: a.reshape(())),
    "scale_cls": (("classifier", "scale"), lambda a: a.reshape(())),
    "wnLayerFavg.weight": (("init", "w"), lambda a: a),
    **{f"dni.layer{i}.0.{w}": (("grad_net", f"dense{i}", "kernel" if w == "weight" else w),
                               (lambda a: a.T) if w == "weight" else (lambda a: a))
       for i in (1, 2) for w in ("weight", "bias")},
    **{f"dni.layer{i}.2.{w}": (("grad_net", f"bn{i}", "scale" if w == "weight" else w),
                               lambda a: a) for i in (1, 2) for w in ("weight", "bias")},
    "dni.layer3.weight": (("grad_net", "dense3", "kernel"), lambda a: a.T),
    "dni.layer3.bias": (("grad_net", "dense3", "bias"), lambda a: a),
}


@pytest.mark.parametrize("steps,n_shot", [(5, 1)])
def test_sib_matches_reference_in_float64(torch, steps, n_shot):
    """In float64 the two agree to rounding: the maths is the same, not just close."""
    lr = 5e-2
    (fs, ys, fq, yq), net, logits_t, loss_t, grads_t = _sib_reference_run(
        torch, steps, n_shot, lr, torch.float64)
    state = _numpy_state(net)
    with jax.enable_x64(True):
        params = {}
        for name, (path, to_flax) in _SIB_NAMES.items():
            params.setdefault(path[0], {})
            node = params[path[0]] if len(path) == 2 else params[path[0]].setdefault(path[1], {})
            node[path[-1]] = jnp.asarray(to_flax(state[name]), jnp.float64)
        (loss, logits), grads = jax.value_and_grad(
            lambda p: sib.loss(p, fs.astype(np.float64), ys, fq.astype(np.float64), yq,
                                       steps=steps, lr=lr), has_aux=True)(params)
        assert logits.dtype == jnp.float64
        _assert_close(f"float64 sib logits K={steps} {n_shot}-shot", logits, logits_t, 1e-12)
        _assert_close(f"float64 sib loss K={steps} {n_shot}-shot", loss, loss_t, 1e-12)
        for name, (path, to_flax) in _SIB_NAMES.items():
            got = functools.reduce(lambda node, key: node[key], path, grads)
            _assert_close(f"float64 d loss / d {name}", got, to_flax(grads_t[name]), 1e-10)


def test_sib_params_load_into_the_reference_module(torch):
    """The exported state dict loads strictly (names and shapes) into the reference head."""
    params = _sib_params(5, 64)
    net = _reference_nets(torch)["sib"](5, 64)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sib_to_torch(params).items()},
                        strict=True)
    assert list(net.state_dict()) == list(sib_to_torch(params))


def test_conv4_sib_end_to_end_matches_reference(torch):
    """Torch Conv-4 + torch SIB == Flax Conv-4 + JAX SIB converted with arch="conv4"."""
    nets = _reference_nets(torch)
    feat = _randomize_bn(torch, _reference_init_convs(torch, nets["conv4"](), 4), 5).eval()
    head = _torch_sib(torch, 5, 1600, seed=6)
    rng = np.random.default_rng(2)
    images = rng.normal(size=(5 + 10, 3, 80, 80)).astype(np.float32)
    ys = np.arange(5)
    with torch.no_grad():
        feats_t = feat(torch.from_numpy(images))
    want = head(feats_t[:5], torch.from_numpy(ys), feats_t[5:], 3, 5e-2).detach().numpy()

    variables = backbone_from_torch("conv4", _numpy_state(feat))
    feats = Conv4().apply(variables, images.transpose(0, 2, 3, 1), train=False)
    params = sib_from_torch(_numpy_state(head), arch="conv4")
    got = sib.apply(params, feats[:5], ys, feats[5:], steps=3, lr=5e-2)
    _assert_close("conv4 + sib logits (K=3)", got, want)
    # Without permuting wnLayerFavg.weight, the Flax-ordered features give other logits.
    wrong = sib.apply(sib_from_torch(_numpy_state(head)), feats[:5], ys, feats[5:], steps=3,
                      lr=5e-2)
    assert _rel_err(wrong, want) > 1e-3


# --------------------------------------------------------------------------------------------
# the outer optimizer
# --------------------------------------------------------------------------------------------


def test_sgd_nesterov_step_matches_torch(torch):
    lr, momentum, wd = 0.05, 0.9, 5e-4
    rng = np.random.default_rng(3)
    params = {"a": rng.normal(size=(4, 3)).astype(np.float32),
              "b": rng.normal(size=(3,)).astype(np.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
             for _ in range(2)]

    tensors = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
    opt = torch.optim.SGD(list(tensors.values()), lr=lr, momentum=momentum, weight_decay=wd,
                          nesterov=True)
    tx = optim.sgd_nesterov(lr, momentum=momentum, weight_decay=wd)
    jparams = jax.tree_util.tree_map(jnp.asarray, params)
    state = tx.init(jparams)
    for step, g in enumerate(grads):  # the first step fills the momentum buffer
        for k, t in tensors.items():
            t.grad = torch.from_numpy(g[k])
        opt.step()
        updates, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, jparams)
        jparams = optax.apply_updates(jparams, updates)
        trace = optax.tree_utils.tree_get(state, "trace")
        for k, t in tensors.items():
            buf = opt.state[t]["momentum_buffer"].numpy()
            assert np.abs(buf).max() > 0.1  # a non-trivial momentum buffer
            err_p = np.max(np.abs(np.asarray(jparams[k]) - t.detach().numpy()))
            err_b = np.max(np.abs(np.asarray(trace[k]) - buf))
            print(f"parity sgd_nesterov step {step} {k}: max abs error params {err_p:.1e}, "
                  f"momentum {err_b:.1e}")
            assert err_p <= 1e-6 and err_b <= 1e-6


# --------------------------------------------------------------------------------------------
# round trips and clear errors
# --------------------------------------------------------------------------------------------


def _random_like(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape, np.float32), tree)


@functools.cache
def _flax_variables_cached(arch):
    module = Conv4() if arch == "conv4" else WideResNet(strides=(1, 2, 2))
    return _random_like(jax.eval_shape(lambda: module.init(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)), 4)


def _flax_variables(arch):
    """Random Flax backbone variables with this package's structure (not computed by XLA)."""
    return jax.tree_util.tree_map(np.array, _flax_variables_cached(arch))


def _sib_params(n_way, feat_dim):
    """Random SIB parameters with the structure `sib.init` returns."""
    return _random_like(jax.eval_shape(lambda: sib.init(jax.random.PRNGKey(0), n_way,
                                                        feat_dim)), 5)


def _assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("arch", ["conv4", "wrn28_10"])
def test_backbone_round_trip_flax_torch_flax(arch):
    variables = _flax_variables(arch)
    _assert_trees_equal(backbone_from_torch(arch, backbone_to_torch(arch, variables)),
                        variables)


@pytest.mark.parametrize("arch", [None, "conv4"])
def test_sib_round_trip_flax_torch_flax(arch):
    params = _sib_params(5, 1600)
    _assert_trees_equal(sib_from_torch(sib_to_torch(params, arch), arch), params)


def _assert_state_dicts_equal(got, want):
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("arch", ["conv4", "wrn28_10"])
def test_backbone_round_trip_torch_flax_torch(torch, arch):
    nets = _reference_nets(torch)
    net = nets["conv4"]() if arch == "conv4" else nets["wrn"](1)
    state = _numpy_state(_randomize_bn(torch, net, 7))
    _assert_state_dicts_equal(backbone_to_torch(arch, backbone_from_torch(arch, state)), state)


@pytest.mark.parametrize("arch", [None, "conv4"])
def test_sib_round_trip_torch_flax_torch(torch, arch):
    state = _numpy_state(_torch_sib(torch, 5, 1600, seed=8))
    back = sib_to_torch(sib_from_torch(state, arch), arch)
    # phi's BatchNorm running averages are never used by SIB: they come back reset.
    for layer in ("dni.layer1.2", "dni.layer2.2"):
        assert np.abs(state[f"{layer}.running_mean"]).max() > 0  # the input had real ones
        np.testing.assert_array_equal(back[f"{layer}.running_mean"], 0)
        np.testing.assert_array_equal(back[f"{layer}.running_var"], 1)
        state[f"{layer}.running_mean"] = back[f"{layer}.running_mean"]
        state[f"{layer}.running_var"] = back[f"{layer}.running_var"]
    _assert_state_dicts_equal(back, state)


def test_bad_backbone_state_dict_gives_one_clear_error():
    state = backbone_to_torch("conv4", _flax_variables("conv4"))
    state["extra.weight"] = np.zeros(3, np.float32)
    del state["conv_blocks.2.layers.BatchNorm.running_var"]
    state["conv_blocks.1.layers.Conv.weight"] = state["conv_blocks.1.layers.Conv.weight"].T
    with pytest.raises(ValueError) as info:
        backbone_from_torch("conv4", state)
    message = str(info.value)
    assert "unknown key(s) (1): extra.weight" in message
    assert "missing key(s) (1): conv_blocks.2.layers.BatchNorm.running_var" in message
    assert ("mis-shaped key(s) (1): conv_blocks.1.layers.Conv.weight (expected (64, 64, 3, 3), "
            "got (3, 3, 64, 64))") in message
    # num_batches_tracked is optional (old checkpoints and BN in eval mode do not need it).
    state = backbone_to_torch("conv4", _flax_variables("conv4"))
    backbone_from_torch("conv4", {k: v for k, v in state.items() if "num_batches" not in k})


def test_wrong_architecture_and_wrapped_state_dicts_are_named():
    state = backbone_to_torch("conv4", _flax_variables("conv4"))
    with pytest.raises(ValueError, match="not a wrn28_10 state dict"):
        backbone_from_torch("wrn28_10", state)
    with pytest.raises(ValueError, match=r"starts with 'module\.'"):
        backbone_from_torch("conv4", {f"module.{k}": v for k, v in state.items()})
    with pytest.raises(ValueError, match="unknown architecture 'resnet50'"):
        backbone_from_torch("resnet50", state)


def test_bad_sib_state_dict_and_params_give_one_clear_error():
    params = _sib_params(5, 16)
    state = sib_to_torch(params)
    state["dni.layer4.weight"] = np.zeros((5, 5), np.float32)
    del state["scale_cls"]
    state["dni.layer2.0.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError) as info:
        sib_from_torch(state)
    message = str(info.value)
    assert "unknown key(s) (1): dni.layer4.weight" in message
    assert "missing key(s) (1): scale_cls" in message
    assert "mis-shaped key(s) (1): dni.layer2.0.bias (expected (40,), got (7,))" in message

    bad = params
    bad["grad_net"]["dense2"]["kernel"] = np.zeros((3, 3), np.float32)
    bad["extra"] = {"x": np.zeros(2)}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \(1\): extra/x; mis-shaped"):
        sib_to_torch(bad)


def test_split_checkpoint_forms():
    sd = {"a": np.zeros(2, np.float32)}
    assert split_checkpoint(sd) == (sd, None, {"lr": None, "nbStep": None})
    feat, head, meta = split_checkpoint({"netFeat": sd, "SIB": sd, "lr": 1e-3, "nbStep": 3})
    assert feat is sd and head is sd and meta == {"lr": 1e-3, "nbStep": 3}
    for bad in ([np.zeros(2)], {"epoch": 3, "acc": 0.5}, {}):
        with pytest.raises(ValueError, match="neither a backbone state dict"):
            split_checkpoint(bad)


# --------------------------------------------------------------------------------------------
# .pth files: both readers, and refusal of malicious pickles
# --------------------------------------------------------------------------------------------


def _assert_loaded_equal(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_loaded_equal(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def _checkpoints(torch):
    nets = _reference_nets(torch)
    feat = _randomize_bn(torch, nets["conv4"](), 9)
    head = _torch_sib(torch, 5, 1600, seed=9)
    return feat.state_dict(), {"netFeat": feat.state_dict(), "SIB": head.state_dict(),
                               "lr": 1e-3, "nbStep": 3}


@pytest.mark.parametrize("zip_format", [True, False])
def test_pth_readers_agree(torch, tmp_path, zip_format):
    state, full = _checkpoints(torch)
    base = torch.randn(6, 5)
    extras = {"half": torch.randn(3).half(), "bf16": torch.randn(4).bfloat16(),
              "column": base[:, 2], "tail": base[3:], "long": torch.arange(4),
              "flag": torch.tensor(True), "empty": torch.zeros(0, 3)}
    for name, obj in (("state", state), ("full", full), ("extras", extras)):
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
        with_torch, without = load_pth(path), load_pth(path, use_torch=False)
        _assert_loaded_equal(without, with_torch)
        reference = torch.load(path, weights_only=True)
        flat = reference["netFeat"] if name == "full" else reference
        got = without["netFeat"] if name == "full" else without
        for k, v in flat.items():
            want = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
            np.testing.assert_array_equal(np.asarray(got[k], want.dtype), want)
    assert without["half"].dtype == np.float16 and without["column"].shape == (6,)


def _zip_pth(path, pickle_bytes, storages=None):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/version", "3\n")
        for key, raw in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", raw)


def _payloads(marker):
    command = f"touch {marker}".encode()
    code = f"open({str(marker)!r}, 'w').write('pwned')".encode()
    return {
        "os.system": b"cos\nsystem\n(V" + command + b"\ntR.",
        "posix.system": b"cposix\nsystem\n(V" + command + b"\ntR.",
        "builtins.eval": b"cbuiltins\neval\n(V" + code + b"\ntR.",
        "builtins.exec": b"\x80\x02cbuiltins\nexec\nX" + struct.pack("<I", len(code)) + code
                         + b"\x85R.",
    }


@pytest.mark.parametrize("name", ["os.system", "posix.system", "builtins.eval",
                                  "builtins.exec"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, name):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[name]
    zipped, raw = tmp_path / "evil.pth", tmp_path / "evil_legacy.pth"
    _zip_pth(zipped, payload)
    raw.write_bytes(payload)
    for path in (zipped, raw):
        with pytest.raises(UnsafePickleError, match=f"refusing to load.*{name}"):
            load_pth(path, use_torch=False)
        assert not marker.exists()


def test_malicious_pickle_is_refused_through_torch_too(torch, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    _zip_pth(path, _payloads(marker)["os.system"])
    with pytest.raises(UnsafePickleError, match="weights_only"):
        load_pth(path)
    assert not marker.exists()


def _tensor_pickle(size, stride, offset=0):
    """A hand-written data.pkl holding one float tensor over storage '0' of 4 elements."""
    def ints(values):
        return b"(" + b"".join(b"K" + bytes([v]) for v in values) + b"t"

    return (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n("
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
            b"X\x03\x00\x00\x00cpuK\x04tQ" + b"K" + bytes([offset]) + ints(size) + ints(stride)
            + b"\x89ccollections\nOrderedDict\n)RtR.")


def test_hand_written_tensor_records_are_checked(tmp_path):
    storage = {"0": np.arange(4, dtype="<f4").tobytes()}
    ok = tmp_path / "ok.pth"
    _zip_pth(ok, _tensor_pickle((2,), (2,), offset=1), storage)
    np.testing.assert_array_equal(load_pth(ok, use_torch=False), [1.0, 3.0])
    bad = tmp_path / "bad.pth"
    _zip_pth(bad, _tensor_pickle((3,), (2,), offset=1), storage)
    with pytest.raises(PthError, match="reads past its storage"):
        load_pth(bad, use_torch=False)
    evil_pid = tmp_path / "pid.pth"
    _zip_pth(evil_pid, b"\x80\x02X\x04\x00\x00\x00evilQ.")
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_pth(evil_pid, use_torch=False)


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a pickle")
    with pytest.raises(PthError):
        load_pth(junk, use_torch=False)
    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(PthError, match="not a PyTorch checkpoint"):
        load_pth(plain, use_torch=False)
    with pytest.raises(FileNotFoundError):
        load_pth(tmp_path / "missing.pth", use_torch=False)


# --------------------------------------------------------------------------------------------
# the import CLI
# --------------------------------------------------------------------------------------------


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.import_torch", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_import_cli_sib_checkpoint_round_trips_through_trained_model(torch, tmp_path):
    from metaunlab.trained_model import TrainedModel

    _, full = _checkpoints(torch)
    path = tmp_path / "netSIBLast.pth"
    torch.save(full, path)
    workdir = tmp_path / "W"
    result = _run_cli(f"--checkpoint={path}", "--arch=conv4", "--dataset=miniimagenet",
                      f"--workdir={workdir}", "--torch_free")
    assert result.returncode == 0, result.stderr

    model = TrainedModel.load(str(workdir))
    loaded = load_pth(path)
    _assert_trees_equal(jax.tree_util.tree_map(np.asarray, model.variables),
                        backbone_from_torch("conv4", loaded["netFeat"]))
    expected = sib_from_torch(loaded["SIB"], arch="conv4")
    for checkpoint in ("last", "best"):
        _assert_trees_equal(jax.tree_util.tree_map(np.asarray,
                                                   model.sib_params(5, 1, checkpoint)), expected)
    config = model.config
    assert (config.backbone, config.pretrain.epochs, config.metatrain.sib_steps) == (
        "conv4", 0, 3)
    assert config.metatrain.inner_lr == 1e-3 and config.settings == "5way_1shot"
    with open(workdir / "model.json") as f:
        assert json.load(f) == {"image_shape": [84, 84, 3], "feat_dim": 1600, "image_format": {
            "channels": 3, "image_size": 84, "resample": "bilinear", "invert": False}}
    assert model.trained_settings() == ["5way_1shot"]

    from experiments.import_torch import import_checkpoint

    with pytest.raises(ValueError, match="already holds a model"):
        import_checkpoint(str(path), "conv4", "miniimagenet", str(workdir))


def test_import_backbone_only_checkpoint(torch, tmp_path):
    from experiments.import_torch import import_checkpoint
    from metaunlab.trained_model import TrainedModel

    state, _ = _checkpoints(torch)
    path = tmp_path / "feat.pth"
    torch.save(state, path)
    summary = import_checkpoint(str(path), "ConvNet_4_64", "miniImageNet", str(tmp_path / "W"))
    assert summary["sib"] is None and summary["feat_dim"] == 1600
    assert sorted(os.listdir(tmp_path / "W")) == ["config.json", "model.json", "pretrain"]
    model = TrainedModel.load(str(tmp_path / "W"))
    assert model.trained_settings() == []
    _assert_trees_equal(jax.tree_util.tree_map(np.asarray, model.variables),
                        backbone_from_torch("conv4", _numpy_state_of(state)))
    with pytest.raises(ValueError, match="SIB head takes 1600 features"):
        _, full = _checkpoints(torch)
        torch.save(full, tmp_path / "full.pth")
        import_checkpoint(str(tmp_path / "full.pth"), "conv4", "cifar_fs", str(tmp_path / "W2"))


def _numpy_state_of(state):
    return {k: v.numpy() for k, v in state.items()}


def test_import_errors_are_one_sentence_with_exit_code_2(tmp_path):
    from experiments.import_torch import import_checkpoint

    neither = tmp_path / "neither.pth"
    _zip_pth(neither, b"\x80\x02}q\x00(X\x05\x00\x00\x00epochK\x03u.")
    workdir = str(tmp_path / "W")
    for args, error, message in (
            ((str(neither), "resnet50", "miniimagenet"), ValueError, "unknown architecture"),
            ((str(neither), "wrn28_10", "omniglot"), ValueError, "unknown --dataset"),
            ((str(tmp_path / "nope.pth"), "wrn28_10", "miniimagenet"), FileNotFoundError,
             "does not exist")):
        with pytest.raises(error, match=message):
            import_checkpoint(*args, workdir)
    result = _run_cli(f"--checkpoint={neither}", "--torch_free", "--arch=wrn28_10",
                      "--dataset=miniimagenet", f"--workdir={workdir}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: the checkpoint is neither a backbone state dict")
    assert result.stderr.strip().count("\n") == 0  # one sentence, no traceback
    assert not (tmp_path / "W").exists()


# --------------------------------------------------------------------------------------------
# a published-format WRN-28-10 + SIB checkpoint: import -> evaluate -> continue meta-training
# --------------------------------------------------------------------------------------------


def _reference_accuracy(torch, wrn, head, image_root, record, steps, lr):
    """The torch transcription's query accuracy on one JSON episode, images read by PIL."""
    from PIL import Image

    from metaunlab.data.augment import CIFAR_FS

    mean = torch.tensor(CIFAR_FS.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(CIFAR_FS.std).reshape(1, 3, 1, 1)

    def feats(groups):
        paths = [p for group in groups for p in group]
        pixels = np.stack([np.asarray(Image.open(image_root / p).convert("RGB"))
                           for p in paths])
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            return wrn((x - mean) / std)

    fs, fq = feats(record["Support"]), feats(record["Query"])
    ys = torch.arange(len(record["Support"])).repeat_interleave(len(record["Support"][0]))
    yq = torch.arange(len(record["Query"])).repeat_interleave(len(record["Query"][0]))
    head.train()  # the synthetic-gradient BatchNorm uses the query set's statistics
    logits = head(fs, ys, fq.requires_grad_(False), steps, lr)
    return 100.0 * float((logits.argmax(-1) == yq).float().mean())


def test_wrn28_10_sib_checkpoint_imports_evaluates_and_meta_training_continues(torch,
                                                                                 tmp_path):
    """The issue's end-to-end promise on CIFAR-FS-shaped data (32 px, WRN-28-10 strides
    (1, 2, 2)): the imported model's accuracy on an episode file equals the PyTorch
    transcription's, and rerunning the experiment on the work dir meta-trains onwards from
    the imported head (step 0 -> 1)."""
    nets = _reference_nets(torch)
    wrn = _randomize_bn(torch, _reference_init_convs(torch, nets["wrn"](1), 0), 1).eval()
    head = _torch_sib(torch, 5, 640, 2)
    path = tmp_path / "netSIBBest.pth"
    torch.save({"netFeat": wrn.state_dict(), "SIB": head.state_dict(), "lr": 1e-3,
                "nbStep": 3}, path)
    data = tmp_path / "cifar-fs"
    write_reference_layout(data, 32, classes_per_split=5, per_class=16, suffix=".png",
                           noise=50.0, seed=3)
    workdir = tmp_path / "W"

    result = _run_cli(f"--checkpoint={path}", "--arch=WRN_28_10", "--dataset=cifar_fs",
                      f"--workdir={workdir}", f"--data_dir={data}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["next"] == (
        f"python -m experiments.cifar_fs --workdir={workdir} --data_dir={data}")

    # Evaluate: one episode of the reference JSON format on the test split.
    classes = sorted(os.listdir(data / "test"))
    record = {"Support": [[f"{c}/000.png"] for c in classes],
              "Query": [[f"{c}/{i:03d}.png" for i in range(1, 16)] for c in classes]}
    methods = run_evaluate_cli(workdir, [record], data / "test", tmp_path)["methods"]
    for method, steps in (("sib", 3), ("k0", 0)):
        want = _reference_accuracy(torch, wrn, head, data / "test", record, steps, 1e-3)
        # One query of 75 is 1.33 points; float32 means differ only in the 6th digit.
        assert methods[method]["accuracy"] == pytest.approx(want, abs=1e-3), method

    # Continue meta-training: the experiment on the same work dir, stored config, one step.
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cifar_fs", f"--workdir={workdir}",
         "--config.metatrain.iterations=1", "--config.test.episodes=10"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from step 0 of 1" in proc.stderr + proc.stdout
    from metaunlab.trained_model import TrainedModel

    model = TrainedModel.load(str(workdir))
    imported = sib_from_torch(_numpy_state(head), arch="wrn28_10")
    trained = jax.tree_util.tree_map(np.asarray, model.sib_params(5, 1, "last"))
    diffs = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: float(np.max(np.abs(a - b))), trained, imported))
    # One SGD step of size 1e-3 moved the imported head, and only a little.
    assert max(diffs) > 0 and max(diffs) < 1e-2, diffs
    results = json.loads((workdir / "results.json").read_text())
    assert results["settings"]["5way_1shot"]["episodes"] == 10
