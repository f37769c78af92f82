"""Backbones by name (built-in, registered or imported) and a module with its variables."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from metaunlab.backbones.conv4 import Conv4
from metaunlab.backbones.resnet12 import ResNet12
from metaunlab.backbones.wide_resnet import WideResNet
from metaunlab.errors import ConfigError

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneFactory",
    "get_backbone",
    "init_backbone",
    "register_backbone",
]

# (image size, remat) -> (Flax module with `__call__(x, train) -> (N, D)`, D)
BackboneFactory = Callable[[int, bool], tuple[nn.Module, int]]


def _conv4_no_remat(remat: bool) -> None:
    if remat:
        raise ConfigError("--config.pretrain.backbone_remat=True is only implemented for the "
                          "residual backbones (wrn28_10, resnet12); Conv-4 is small enough "
                          "without it.")


def _conv4(image_size: int, remat: bool) -> tuple[nn.Module, int]:
    _conv4_no_remat(remat)
    model = Conv4()
    side = image_size
    for _ in range(4):
        side //= 2
    return model, model.width * side * side


def _conv4_gap_factory(max_pools: int, name: str) -> BackboneFactory:
    def factory(image_size: int, remat: bool) -> tuple[nn.Module, int]:
        _conv4_no_remat(remat)
        smallest = 2 ** max_pools
        if image_size < smallest:
            raise ConfigError(f"--config.backbone={name} needs images of at least {smallest} px "
                              f"({max_pools} 2x2 max-pools before the average), not "
                              f"{image_size}.")
        model = Conv4(max_pools=max_pools, global_average=True)
        return model, model.width
    return factory


def _wrn28_10(image_size: int, remat: bool) -> tuple[nn.Module, int]:
    strides = (1, 2, 2) if image_size <= 32 else (2, 2, 2)
    model = WideResNet(depth=28, widen_factor=10, strides=strides, remat=remat)
    return model, 64 * model.widen_factor


def _resnet12(image_size: int, remat: bool) -> tuple[nn.Module, int]:
    del image_size
    model = ResNet12(remat=remat)
    return model, model.widths[-1]


BACKBONES: dict[str, BackboneFactory] = {
    "conv4": _conv4,
    "conv4_gap": _conv4_gap_factory(3, "conv4_gap"),
    "conv4_gap_two_pools": _conv4_gap_factory(2, "conv4_gap_two_pools"),
    "wrn28_10": _wrn28_10,
    "resnet12": _resnet12,
}


def register_backbone(name: str, factory: BackboneFactory) -> BackboneFactory:
    """Make `factory` available as `--config.backbone=<name>`.

    Args:
      name: a name no backbone has yet.
      factory: `factory(image_size, remat)` returns `(module, feature_dim)`: a Flax module
        whose `__call__(x, train: bool)` maps NHWC float images to (N, feature_dim)
        features and uses BatchNorm (or none) like the built-in backbones, and the size of
        those features.

    Returns:
      `factory` itself.

    Raises:
      ConfigError: the name is taken.
    """
    if name in BACKBONES:
        raise ConfigError(f"a backbone named {name!r} is already registered; pick another name.")
    BACKBONES[name] = factory
    return factory


def _imported_factory(spec: str) -> BackboneFactory:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"--config.backbone={spec!r}: module {module_name!r} cannot be "
                          f"imported ({error}); put it on PYTHONPATH or fix the name.") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"--config.backbone={spec!r}: {module_name} has no callable {attr!r}; "
                          "name a factory (image_size, remat) -> (module, feature_dim).")
    return factory


def get_backbone(name: str, image_size: int, remat: bool = False) -> tuple[nn.Module, int]:
    """Build a backbone by name for square ``image_size`` inputs.

    Args:
      name: a registered name (``"conv4"``; ``"conv4_gap"`` and ``"conv4_gap_two_pools"``,
        Conv-4 ending in a global average after three or two max-pools; ``"wrn28_10"``,
        with strides ``(1, 2, 2)`` for ``image_size <= 32`` and ``(2, 2, 2)`` above;
        ``"resnet12"``; or one added with :func:`register_backbone`) or
        ``"package.module:factory"``, a factory importable from anywhere with the signature
        of :func:`register_backbone`.
      image_size: the side of the square input images, in pixels.
      remat: recompute each residual block in the backward pass (``wrn28_10`` and
        ``resnet12`` only).

    Returns:
      ``(module, D)``: the Flax module, whose ``__call__(x, train)`` maps (N, H, W, C)
      images to (N, D) features, and the feature dimension D.

    Raises:
      ConfigError: an unknown name, a factory that cannot be imported or returns something
        else, or a remat or image size the backbone does not support.
    """
    if name in BACKBONES:
        factory = BACKBONES[name]
    elif ":" in name:
        factory = _imported_factory(name)
    else:
        raise ConfigError(f"Unknown backbone {name!r}; valid names are: {', '.join(BACKBONES)}, "
                          "or 'package.module:factory' for your own.")
    module, feat_dim = factory(image_size, remat)
    if not isinstance(module, nn.Module) or int(feat_dim) < 1:
        raise ConfigError(f"--config.backbone={name!r} returned {module!r} and {feat_dim!r}; a "
                          "backbone factory returns (Flax module, feature dimension).")
    return module, int(feat_dim)


@dataclasses.dataclass
class Backbone:
    """A backbone module with its variables.

    Attributes:
      module: the Flax module (`get_backbone`).
      variables: its variables, `{"params", "batch_stats"}`.
      feat_dim: the feature dimension D.
    """

    module: nn.Module
    variables: Any
    feat_dim: int

    def features(self, variables: Any, images: jax.Array) -> jax.Array:
        """Inference-mode features (BatchNorm uses running statistics): the frozen backbone.

        Args:
          variables: the module's variables (usually `self.variables`).
          images: (N, H, W, C) float images, preprocessed.

        Returns:
          (N, D) features.
        """
        return self.module.apply(variables, images, train=False)


def init_backbone(module: nn.Module, feat_dim: int, image_shape: tuple[int, int, int],
                  seed: int) -> Backbone:
    """A `Backbone` with freshly initialised variables.

    Args:
      module: the Flax module (`get_backbone`).
      feat_dim: its feature dimension D.
      image_shape: (H, W, C) of one input image.
      seed: the seed of the initialisation.

    Returns:
      The `Backbone`.
    """
    variables = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, *image_shape)),
                            train=False)
    return Backbone(module, variables, feat_dim)


# ---- reduced-precision compute ------------------------------------------------------------
# bfloat16 arithmetic on float32 parameters: optimizer updates and checkpoints stay float32,
# a forward pass casts the parameters and its input, and features go back to float32, so the
# SIB head and the losses always run in float32. It halves the backbone's activation memory
