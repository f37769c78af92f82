"""The independent PyTorch transcription of the reference networks, and helpers shared by the
interop tests.

The PyTorch networks below are an independent transcription of the reference maths (Conv-4-64,
the pre-activation WRN-28-10 and the SIB head with K synthetic-gradient steps through
`torch.autograd.grad(create_graph=True)`), with the reference's state-dict names. Weights are
random with non-trivial BatchNorm statistics; everything is float32. Tests that need torch
ask for the `torch` fixture (tests/conftest.py) and skip themselves when it is not installed.
"""

from __future__ import annotations

import collections
import functools
import zipfile

import jax
import numpy as np
import pytest


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


def _checkpoints(torch):
    nets = _reference_nets(torch)
    feat = _randomize_bn(torch, nets["conv4"](), 9)
    head = _torch_sib(torch, 5, 1600, seed=9)
    return feat.state_dict(), {"netFeat": feat.state_dict(), "SIB": head.state_dict(),
                               "lr": 1e-3, "nbStep": 3}


class TorchReference:
    """The transcription bound to the torch module: `nets` holds the network classes
    ("conv4", "wrn", "sib"); the methods are the helpers above without their torch argument."""

    def __init__(self, torch):
        self.torch = torch
        self.nets = _reference_nets(torch)

    def randomize_bn(self, module, seed):
        return _randomize_bn(self.torch, module, seed)

    def init_convs(self, module, seed):
        return _reference_init_convs(self.torch, module, seed)

    def sib(self, n_way, feat_dim, seed):
        return _torch_sib(self.torch, n_way, feat_dim, seed)

    def checkpoints(self):
        return _checkpoints(self.torch)

    @staticmethod
    def numpy_state(module):
        return _numpy_state(module)


@pytest.fixture(scope="module")
def reference(torch):
    """The PyTorch transcription of the reference networks (skips the test without torch)."""
    return TorchReference(torch)


def _zip_pth(path, pickle_bytes, storages=None):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/version", "3\n")
        for key, raw in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", raw)


@pytest.fixture(scope="session")
def zip_pth():
    """`zip_pth(path, pickle_bytes, storages=None)`: a zip-format .pth file by hand."""
    return _zip_pth


def _assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="session")
def assert_trees_equal():
    """`assert_trees_equal(a, b)`: same structure, dtypes and values, leaf by leaf."""
    return _assert_trees_equal
