"""`Head`: a SIB head's composition, a frozen typed description saved with its checkpoints.

    head = Head(n_way=5, feat_dim=64, transforms=("power", "centering"))
    params = head.init(rng)
    logits = head.apply(params, support_feats, support_labels, query_feats, steps=3, lr=1e-3)
    head.save(folder)        # head.json beside the checkpoints; Head.load(folder) reads it

`Head(n_way, feat_dim)` is the reference head of `metaunlab.sib`. Each name in
`transforms` is an episode feature transform of `metaunlab.head.parts` (applied in order);
`readout` names a readout of the logits. Whatever reads a trained head back (evaluation,
`TrainedModel`, `predict`, `compare`) takes its composition from this description.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax

from metaunlab import equivariant_phi, files, sib
from metaunlab import synthetic_gradient as per_way_phi
from metaunlab.errors import ConfigError
from metaunlab.head import parts
from metaunlab.numerics import cross_entropy

Params = dict[str, Any]

# The file a head's description is saved in, beside its checkpoints.
HEAD_FILE = "head.json"
_RETRAIN = "meta-train the head again in a new work dir"

# The synthetic-gradient networks a head can have: the reference's, as wide as the way
# count, or one whose weights serve any way count (`metaunlab.equivariant_phi`).
PHIS = ("per_way", "equivariant")


@dataclasses.dataclass(frozen=True)
class Head:
    """What a SIB head is made of.

    Attributes:
      n_way: the number of classes per episode phi was built for.
      feat_dim: the dimension of the features it reads.
      transforms: names of `parts.TRANSFORMS`, applied to each episode's features in order.
      readout: a name of `parts.READOUTS` or None (the head's own logits).
      phi: one of `PHIS`: "per_way", the reference phi (`metaunlab.synthetic_gradient`),
        serves `n_way`-way episodes only; "equivariant" (`metaunlab.equivariant_phi`)
        serves any number of ways (`for_ways`).
    """

    n_way: int
    feat_dim: int
    transforms: tuple[str, ...] = ()
    readout: str | None = None
    phi: str = "per_way"

    def __post_init__(self):
        object.__setattr__(self, "transforms", tuple(self.transforms))
        unknown = [t for t in self.transforms if t not in parts.TRANSFORMS]
        if unknown or len(set(self.transforms)) != len(self.transforms):
            raise ConfigError(f"head transforms {list(self.transforms)}: each at most once, "
                              f"from {sorted(parts.TRANSFORMS)}.")
        if self.readout is not None and self.readout not in parts.READOUTS:
            raise ConfigError(f"head readout {self.readout!r}: use None or one of "
                              f"{sorted(parts.READOUTS)}.")
        if self.phi not in PHIS:
            raise ConfigError(f"head phi {self.phi!r}: use one of {list(PHIS)}.")

    @property
    def any_ways(self) -> bool:
        """Whether the same parameters serve episodes of any number of ways."""
        return self.phi == "equivariant"

    def for_ways(self, n_way: int) -> Head:
        """This head, applied to `n_way`-way episodes.

        Raises:
          ConfigError: a per-way head asked for another way count than its own.
        """
        if n_way == self.n_way:
            return self
        if not self.any_ways:
            raise ConfigError(f"this SIB head's synthetic-gradient network is {self.n_way} "
                              f"classes wide, so it cannot serve {n_way}-way episodes; "
                              "meta-train one with --config.metatrain.phi=equivariant.")
        return dataclasses.replace(self, n_way=n_way)

    @property
    def _phi_apply(self):
        return equivariant_phi.apply if self.any_ways else per_way_phi.apply

    @property
    def feature_transforms(self) -> tuple[parts.FeatureTransform, ...]:
        return tuple(parts.TRANSFORMS[name]() for name in self.transforms)

    @property
    def logit_readout(self) -> parts.Readout | None:
        return None if self.readout is None else parts.READOUTS[self.readout]()

    @property
    def k0_reads_queries(self) -> bool:
        """Whether the head reads the query set without any synthetic step (a feature
        transform or the readout reads it), so its K = 0 control is transductive."""
        readout = self.logit_readout
        return (any(t.reads_queries for t in self.feature_transforms)
                or (readout is not None and readout.reads_queries))

    def describe(self) -> str:
        """The head's parts and what they assume, in words."""
        named = [t.description for t in self.feature_transforms]
        if self.any_ways:
            named.append("a synthetic-gradient network equivariant to the order of the "
                         "classes, which serves any way count")
        if self.logit_readout is not None:
            named.append(self.logit_readout.description)
        return f"with {', '.join(named)}" if named else "the reference head"

    def init(self, rng: jax.Array, *, scale: float = 10.0) -> Params:
        """Fresh parameters: `sib.init`'s, plus each part's under its key."""
        phi_rng, rng = jax.random.split(rng) if self.any_ways else (None, rng)
        params = sib.init(rng, self.n_way, self.feat_dim, scale=scale)
        if self.any_ways:
            params["grad_net"] = equivariant_phi.init(phi_rng)
        for part in (*self.feature_transforms, self.logit_readout):
            if part is not None:
                params[part.key] = part.init()
        return params

    def check(self, params: Params) -> None:
        """Raises if `params` have other entries than this head's parts give them."""
        want = {"init", "classifier", "grad_net"} | {t.key for t in self.feature_transforms}
        if self.logit_readout is not None:
            want.add(self.logit_readout.key)
        if set(params) != want:
            raise ConfigError(f"SIB parameters with entries {sorted(params)} do not match the "
                              f"head {self}, which needs {sorted(want)}; pass the Head they "
                              "were trained with (TrainedModel.head).")
        equivariant = equivariant_phi.holds(params["grad_net"])
        if equivariant != self.any_ways or (
                not equivariant and per_way_phi.n_way_of(params["grad_net"]) != self.n_way):
            raise ConfigError(f"SIB parameters with a {'equivariant' if equivariant else 'per-way'}"
                              f" synthetic-gradient network do not match the head {self}; pass "
                              "the Head they were trained with (TrainedModel.head).")

    def apply(self, params: Params, support_feats: jax.Array, support_labels: jax.Array,
              query_feats: jax.Array, *, steps: int = 3, lr: float = 1e-3,
              remat: bool = False, query_mask: jax.Array | None = None,
              readout: bool | None = None) -> jax.Array:
        """Query logits (..., Nq, N): the transforms, `sib.apply`, then the readout.

        Args:
          params: parameters from `init` (or a checkpoint of this head).
          support_feats, support_labels, query_feats, steps, lr, remat, query_mask: as in
            `sib.apply`.
          readout: whether the readout is applied; None: where the head has one and
            K > 0, so K = 0 stays the initialization network on the transformed features.

        Returns:
          Logits (..., Nq, N).
        """
        self.check(params)
        for transform in self.feature_transforms:
            support_feats, query_feats = transform.apply(params[transform.key], support_feats,
                                                         query_feats, query_mask)
        logits = sib.apply(params, support_feats, support_labels, query_feats, steps=steps,
                           lr=lr, remat=remat, query_mask=query_mask, n_way=self.n_way,
                           phi_apply=self._phi_apply)
        reader = self.logit_readout
        if readout is None:
            readout = steps > 0 and reader is not None
        elif readout and reader is None:
            raise ConfigError(f"readout=True needs a head with a readout; {self} has none.")
        return reader.apply(params[reader.key], logits, query_mask) if readout else logits

    def loss(self, params: Params, support_feats: jax.Array, support_labels: jax.Array,
             query_feats: jax.Array, query_labels: jax.Array, *, steps: int = 3,
             lr: float = 1e-3, grad_coeff: float = 0.0,
             remat: bool = False) -> tuple[jax.Array, jax.Array]:
        """`(loss, logits)`: `sib.loss` on this head's logits (arguments as there)."""
        logits = self.apply(params, support_feats, support_labels, query_feats, steps=steps,
                            lr=lr, remat=remat)
        value = cross_entropy(logits, query_labels)
        if grad_coeff:
            value = value + grad_coeff * sib.grad_matching_loss(params, logits, query_labels,
                                                                self._phi_apply)
        return value, logits

    def to_dict(self) -> dict[str, Any]:
        return {"n_way": self.n_way, "feat_dim": self.feat_dim,
                "transforms": list(self.transforms), "readout": self.readout, "phi": self.phi}

    def save(self, folder: str) -> None:
        """Writes `head.json` into `folder`, atomically."""
        with files.atomic_path(os.path.join(folder, HEAD_FILE)) as partial, \
                open(partial, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, folder: str) -> Head:
        """The head described by `folder`'s `head.json`."""
        path = os.path.join(folder, HEAD_FILE)
        if not os.path.exists(path):
            raise ConfigError(f"{path} does not exist: {folder} holds no SIB head description; "
                              "meta-train it again, or import it with experiments."
                              "import_torch.")
        info = files.read_json_object(path, _RETRAIN)
        try:
            # A description without "phi" was written before heads had a choice of phi.
            return cls(int(info["n_way"]), int(info["feat_dim"]), tuple(info["transforms"]),
                       info["readout"], str(info.get("phi", "per_way")))
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{path} is not a head description ({err}); {_RETRAIN}.") from None
