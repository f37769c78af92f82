"""Feature-extractor backbones for few-shot learning (Flax linen).

This module holds the three convolutional feature extractors used by SIB
(Hu et al., "Empirical Bayes Transductive Meta-Learning with Synthetic
Gradients", ICLR 2020) and by the later work it is usually compared with:

* :class:`Conv4` -- the classic Conv-4-64 network (Vinyals et al. 2016,
  Snell et al. 2017), flattened output, any input size; ``"conv4_gap"`` is the same
  network with a global average over the last block's map in place of its last max-pool,
  ``"conv4_gap_two_pools"`` without its last two max-pools.
* :class:`WideResNet` -- the pre-activation WRN-28-10 of Zagoruyko &
  Komodakis (2016) in the exact form used by the SIB reference code.
* :class:`ResNet12` -- the 640-d ResNet-12 of MetaOptNet (Lee et al. 2019).

:func:`get_backbone` builds one of them, or any Flax module registered with
:func:`register_backbone` or named as ``"package.module:factory"``, by name for a given
image size and returns its feature dimension as well; :class:`Backbone` holds a module with its
variables (:func:`init_backbone`). The backbone may compute in bfloat16 on float32
parameters (:func:`compute_dtype`, :func:`cast_floats`): features are returned in float32.

Conventions, chosen so that the networks behave like the PyTorch reference
implementations:

* Inputs are NHWC float32 images; every module returns a 2-D ``(N, D)`` feature
  matrix and has the signature ``__call__(self, x, train: bool)``.
* BatchNorm uses batch statistics when ``train=True`` and running averages when
  ``train=False``. Its hyper-parameters mirror PyTorch's defaults: Flax
  ``momentum=0.9`` is PyTorch ``momentum=0.1``, ``epsilon=1e-5``, scale
  initialised to 1 and bias to 0. (One small difference remains: Flax updates
  the running variance with the biased batch variance, PyTorch with the
  unbiased one.)
* Convolutions have no bias and are initialised with PyTorch's
  ``kaiming_normal_(mode="fan_out")``: a normal with standard deviation
  ``sqrt(2 / (kh * kw * out_channels))`` (see :func:`conv_fan_out_normal`).
* Padding is always given explicitly (``((1, 1), (1, 1))`` for 3x3 kernels, no
  padding for 1x1 kernels) instead of ``"SAME"``. For a stride-2 convolution on
  an even-sized input, ``"SAME"`` pads only on the bottom/right, whereas PyTorch
  ``padding=1`` pads symmetrically, which shifts the sampling grid by one pixel.
  Explicit symmetric padding reproduces PyTorch's output exactly, and the
  output size is ``floor((H + 2 - 3) / stride) + 1`` as in PyTorch.
* Max-pooling is 2x2 with stride 2 and no padding (``"VALID"``), i.e. odd sizes
  are floored like PyTorch's ``MaxPool2d(2)``.

One module per network (:mod:`~metaunlab.backbones.conv4`,
:mod:`~metaunlab.backbones.wide_resnet`, :mod:`~metaunlab.backbones.resnet12`), the layers
they share (:mod:`~metaunlab.backbones.layers`), the names (:mod:`~metaunlab.backbones.registry`)
and reduced precision (:mod:`~metaunlab.backbones.precision`); everything public is
importable from ``metaunlab.backbones``.
"""

from metaunlab.backbones.conv4 import Conv4
from metaunlab.backbones.layers import conv_fan_out_normal
from metaunlab.backbones.precision import cast_floats, compute_dtype
from metaunlab.backbones.registry import (
    BACKBONES,
    Backbone,
    get_backbone,
    init_backbone,
    register_backbone,
)
from metaunlab.backbones.resnet12 import ResNet12
from metaunlab.backbones.wide_resnet import WideResNet

__all__ = [
    "BACKBONES",
    "Backbone",
    "Conv4",
    "ResNet12",
    "WideResNet",
    "cast_floats",
    "compute_dtype",
    "conv_fan_out_normal",
    "get_backbone",
    "init_backbone",
    "register_backbone",
]
