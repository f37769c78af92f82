"""Interoperability with the PyTorch reference implementation of SIB (Hu et al., ICLR 2020).

* :mod:`metaunlab.interop.pth` reads ``.pth`` files, with torch (``weights_only=True``) or
  with a restricted, torch-free unpickler, and returns numpy arrays.
* :mod:`metaunlab.interop.convert` maps reference state dicts (Conv-4-64, WRN-28-10 and the
  ``ClassifierSIB`` head) to this package's Flax variables and SIB parameters, and back.

``python -m experiments.import_torch`` turns a published checkpoint into a work directory.
"""

from metaunlab.interop.convert import (
    ARCHS,
    backbone_from_torch,
    backbone_to_torch,
    canonical_arch,
    conv4_torch_feature_order,
    sib_from_torch,
    sib_to_torch,
    split_checkpoint,
)
from metaunlab.interop.pth import PthError, UnsafePickleError, load_pth

__all__ = [
    "ARCHS",
    "PthError",
    "UnsafePickleError",
    "backbone_from_torch",
    "backbone_to_torch",
    "canonical_arch",
    "conv4_torch_feature_order",
    "load_pth",
    "sib_from_torch",
    "sib_to_torch",
    "split_checkpoint",
]
